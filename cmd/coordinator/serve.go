package main

import (
	"github.com/cacheplane/cacheplane/cli"
	"github.com/cacheplane/cacheplane/cli/serve"
)

// The daemon's command: only this binary links the coordinator (Raft, bolt).
func init() { cli.AddDaemonCommand(serve.Command) }
