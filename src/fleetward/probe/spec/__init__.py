"""The probe spec: models, the TOML loader and the shipped demo spec."""
