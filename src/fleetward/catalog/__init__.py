"""The API inventory: every route declares who owns it, who may call it, what it touches,
and where it is in its life. The app refuses to start with an uninventoried route.
"""
