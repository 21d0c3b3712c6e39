"""Over-the-air update campaigns: engineering's object, with no personal data in it."""
