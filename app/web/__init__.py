"""Server-rendered pages of the app (the review page)."""
