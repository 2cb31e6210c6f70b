"""The durable runtime: run journal, executor, run control and the embedded dispatcher."""
