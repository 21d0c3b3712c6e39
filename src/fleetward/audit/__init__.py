"""Audit: typed events recorded in the same transaction as the change they describe.

Later: hash chain, detections and investigation queries (abuse/audit issue).
"""
