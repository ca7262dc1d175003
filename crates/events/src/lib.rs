//! Decoding of scheduled-exam events (JSON and HL7 v2). Work in progress.
