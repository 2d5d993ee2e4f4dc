//! Reads and validates cortex.yaml (Cortex AsyncAPI schema), applies defaults.
