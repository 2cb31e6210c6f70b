"""Who is calling: users, workspaces, memberships, API tokens (and, with the server, sessions)."""
