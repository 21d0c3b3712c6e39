"""Identities: tenants, people, memberships, applications, workloads, and the tokens they hold."""
