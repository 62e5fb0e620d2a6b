package sysstats

import (
	"os"
	"path/filepath"
	"testing"
)

// The cgroup version is detected once per root; a failed detection is not
// remembered (the hierarchy may be mounted later).
func TestCgroupVersionCached(t *testing.T) {
	root := filepath.Join(t.TempDir(), "cg")
	if _, err := cgroupVersion(root); err == nil {
		t.Fatal("cgroupVersion of a missing root: want an error")
	}
	if err := os.MkdirAll(root, 0o755); err != nil {
		t.Fatal(err)
	}
	marker := filepath.Join(root, "cgroup.controllers")
	if err := os.WriteFile(marker, []byte("cpu memory\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if v, err := cgroupVersion(root); err != nil || v != 2 {
		t.Fatalf("cgroupVersion = %d, %v; want 2 once mounted", v, err)
	}
	if err := os.Remove(marker); err != nil {
		t.Fatal(err)
	}
	if v, err := cgroupVersion(root); err != nil || v != 2 {
		t.Fatalf("cgroupVersion after the first detection = %d, %v; want the remembered 2", v, err)
	}
}
