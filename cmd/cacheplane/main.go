// Command cacheplane is the operator CLI: every command of package cli,
// spoken to a coordinator's admin socket. It has no serve command and
// links no Raft and no bolt (cacheplane-coordinator is the daemon).
package main

import "github.com/cacheplane/cacheplane/cli"

func main() { cli.Main("cacheplane") }
