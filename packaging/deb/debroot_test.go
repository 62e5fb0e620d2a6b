package main

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cacheplane/cacheplane/packaging"
)

// The throw-away Debian root the packages are installed into: a minbase
// debootstrap of the host's own release from the host's own mirror (read
// from /etc/apt, never written here), with what the packages depend on.
// Built once (about a minute, 280 MB) into <repo>/.dev/debian-root/<codename>
// and copied for each test.
var rootPackages = []string{"adduser", "containerd", "runc", "iproute2", "init-system-helpers"}

func hostCodename() (string, error) {
	f, err := os.Open("/etc/os-release")
	if err != nil {
		return "", err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VERSION_CODENAME="); ok && v != "" {
			return strings.Trim(v, `"`), nil
		}
	}
	return "", fmt.Errorf("no VERSION_CODENAME in /etc/os-release")
}

// cachedDebianRoot returns the pristine root, building it when missing.
func cachedDebianRoot(ctx context.Context, t *testing.T, repo string) string {
	t.Helper()
	codename, err := hostCodename()
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(repo, ".dev", "debian-root", codename)
	stamp := strings.Join(rootPackages, ",")
	if b, err := os.ReadFile(filepath.Join(dir, ".complete")); err == nil && string(b) == stamp {
		return dir
	}
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	tool, err := exec.LookPath("debootstrap")
	if err != nil {
		t.Fatalf("debootstrap is needed to build a throw-away Debian root (make deps installs it): %v", err)
	}
	entries, err := packaging.ReadHostSources("/etc/apt")
	if err != nil {
		t.Fatal(err)
	}
	mirror, err := packaging.HostMirror(entries)
	if err != nil {
		t.Fatal(err)
	}
	tmp := dir + ".tmp"
	if err := os.RemoveAll(tmp); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Dir(dir), 0o755); err != nil {
		t.Fatal(err)
	}
	args := []string{"--variant=minbase", "--include=" + strings.Join(rootPackages, ",")}
	if mirror.SignedBy != "" {
		args = append(args, "--keyring="+mirror.SignedBy)
	}
	args = append(args, codename, tmp, mirror.URI)
	t.Logf("building the Debian root: debootstrap %s", strings.Join(args, " "))
	if out, err := exec.CommandContext(ctx, tool, args...).CombinedOutput(); err != nil {
		t.Fatalf("debootstrap: %v\n%s", err, lastLines(string(out), 20))
	}
	// The downloaded .debs are not needed to install ours.
	debs, _ := filepath.Glob(filepath.Join(tmp, "var/cache/apt/archives/*.deb"))
	for _, d := range debs {
		os.Remove(d)
	}
	if err := os.WriteFile(filepath.Join(tmp, ".complete"), []byte(stamp), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, dir); err != nil {
		t.Fatal(err)
	}
	return dir
}

// copyRoot copies the pristine root for one test.
func copyRoot(ctx context.Context, t *testing.T, pristine, dst string) {
	t.Helper()
	if out, err := exec.CommandContext(ctx, "cp", "-a", pristine+"/.", dst).CombinedOutput(); err != nil {
		t.Fatalf("copy root: %v: %s", err, out)
	}
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
