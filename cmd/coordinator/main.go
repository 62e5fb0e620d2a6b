// Command cacheplane-coordinator runs a coordinator member (serve) and
// carries every operator command.
package main

import "github.com/cacheplane/cacheplane/cli"

func main() { cli.Main("cacheplane-coordinator") }
