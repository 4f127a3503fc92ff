"""The long-lived server: REST API, web UI, controller loop and DBManager endpoint."""
