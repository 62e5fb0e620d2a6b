//go:build tools

// Package seaweedfs only pins github.com/seaweedfs/seaweedfs/weed for
// scripts/seaweedfs.sh; it has no code of its own.
package seaweedfs

import _ "github.com/seaweedfs/seaweedfs/weed"
