"""The Tornado shell: request handlers, the API, the editor pages, the application.

May import every other ring; nothing imports it but ``collab`` itself and ``cli``.
"""
