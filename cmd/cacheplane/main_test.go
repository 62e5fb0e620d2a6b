package main

import (
	"os/exec"
	"strings"
	"testing"
)

// TestLinksNoRaftNorBolt: the operator CLI must not carry the coordinator
// (go list -deps ./cmd/cacheplane | grep -E 'hashicorp/raft|bbolt' prints
// nothing), while cacheplane-coordinator does.
func TestLinksNoRaftNorBolt(t *testing.T) {
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("the go command is needed: %v", err)
	}
	deps := func(pkg string) []string {
		out, err := exec.Command(goTool, "list", "-deps", pkg).Output()
		if err != nil {
			t.Fatalf("go list -deps %s: %v", pkg, err)
		}
		return strings.Fields(string(out))
	}
	forbidden := func(p string) bool {
		return strings.Contains(p, "hashicorp/raft") || strings.Contains(p, "bbolt") ||
			p == "github.com/cacheplane/cacheplane/coordinator" || p == "github.com/cacheplane/cacheplane/cli/serve"
	}
	for _, p := range deps("github.com/cacheplane/cacheplane/cmd/cacheplane") {
		if forbidden(p) {
			t.Errorf("cmd/cacheplane links %s", p)
		}
	}
	n := 0
	for _, p := range deps("github.com/cacheplane/cacheplane/cmd/coordinator") {
		if forbidden(p) {
			n++
		}
	}
	if n == 0 {
		t.Error("cmd/coordinator links none of raft, bbolt, coordinator, cli/serve: the check above proves nothing")
	}
}
