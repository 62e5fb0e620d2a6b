// Package backupstore will own where addon dumps go and how they are named,
// encrypted, checksummed, listed, downloaded and deleted (a local directory
// or an S3-compatible store behind one Store interface), and the retention
// policy as a pure function. Nothing is implemented yet: backups are a later
// issue; the package exists so the layout of DESIGN.md is in place.
package backupstore
