// Command cacheplane is the operator CLI (the same commands as
// cacheplane-coordinator).
package main

import "github.com/cacheplane/cacheplane/cli"

func main() { cli.Main("cacheplane") }
