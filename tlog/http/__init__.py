"""The HTTP API: app and middleware, errors and their statuses, routes, admin, access."""
