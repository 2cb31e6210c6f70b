"""The HTTP surface. Today: health; the full API, auth and the studio come with the server issue."""
