"""Authorization: the closed permission vocabulary, relationships, the policy and the PDP."""
