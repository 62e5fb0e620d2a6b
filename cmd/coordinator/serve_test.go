package main

import (
	"testing"

	"github.com/cacheplane/cacheplane/cli"
)

func TestHasServe(t *testing.T) {
	for _, c := range cli.NewRoot("cacheplane-coordinator").Commands() {
		if c.Name() == "serve" {
			return
		}
	}
	t.Fatal("cacheplane-coordinator has no serve command")
}
