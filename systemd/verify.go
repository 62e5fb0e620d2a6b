package systemd

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
)

// HostUnitDir is where the host's units live; a verify root copies it, so
// the units ours name (network-online.target, containerd.service) exist.
const HostUnitDir = "/lib/systemd/system"

// Root is a throw-away root directory holding a copy of the host's units,
// some units under test and a stub executable at each of their ExecStart=
// paths: `systemd-analyze verify --root` checks a unit there as it would on
// an installed host, without systemd running and without our binaries.
type Root struct {
	Dir  string
	tool string
}

// NewRoot fills dir (empty or missing) with the host's units and units
// (file name -> text). It fails when systemd-analyze is missing: the
// Debian package systemd provides it (make deps installs it).
func NewRoot(ctx context.Context, dir string, units map[string][]byte) (*Root, error) {
	tool, err := exec.LookPath("systemd-analyze")
	if err != nil {
		return nil, fmt.Errorf("systemd-analyze not found (Debian package systemd; `make deps` installs it): %w", err)
	}
	unitDir := filepath.Join(dir, "lib/systemd/system")
	if err := os.MkdirAll(unitDir, 0o755); err != nil {
		return nil, err
	}
	if out, err := exec.CommandContext(ctx, "cp", "-a", HostUnitDir+"/.", unitDir).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("copy %s: %v: %s", HostUnitDir, err, out)
	}
	for name, text := range units {
		if err := os.WriteFile(filepath.Join(unitDir, name), text, 0o644); err != nil {
			return nil, err
		}
		u, err := Parse(string(text))
		if err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		argv, err := u.ExecStart()
		if err != nil || !filepath.IsAbs(argv[0]) {
			continue // verify itself reports it
		}
		stub := filepath.Join(dir, argv[0])
		if err := os.MkdirAll(filepath.Dir(stub), 0o755); err != nil {
			return nil, err
		}
		if err := os.WriteFile(stub, []byte("#!/bin/sh\nexit 0\n"), 0o755); err != nil {
			return nil, err
		}
	}
	return &Root{Dir: dir, tool: tool}, nil
}

func (r *Root) run(ctx context.Context, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, r.tool, args...)
	// notice, not the default warning: some parse failures ("Failed to
	// parse kill mode specification, ignoring") are logged at notice.
	cmd.Env = append(os.Environ(), "SYSTEMD_LOG_LEVEL=notice", "SYSTEMD_LOG_COLOR=0", "SYSTEMD_COLORS=0", "SYSTEMD_PAGER=", "LC_ALL=C")
	out, err := cmd.CombinedOutput()
	return strings.TrimSpace(string(out)), err
}

// Verify runs `systemd-analyze verify --man=no --root=DIR name`. Any line
// it prints is an error: verify exits 0 after "Unknown key ..., ignoring"
// or "Failed to parse ..., ignoring", so its status alone proves nothing.
// It also checks each capability the unit names against `systemd-analyze
// capability`: systemd drops an unknown name without a word.
func (r *Root) Verify(ctx context.Context, name string) error {
	out, err := r.run(ctx, "verify", "--man=no", "--root="+r.Dir, name)
	if err != nil || out != "" {
		return fmt.Errorf("systemd-analyze verify %s: exit %v:\n%s", name, err, out)
	}
	text, err := os.ReadFile(filepath.Join(r.Dir, "lib/systemd/system", name))
	if err != nil {
		return err
	}
	u, err := Parse(string(text))
	if err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	var caps []string
	for _, k := range []string{"CapabilityBoundingSet", "AmbientCapabilities"} {
		for _, v := range u["Service"][k] {
			caps = append(caps, strings.Fields(strings.TrimPrefix(v, "~"))...)
		}
	}
	if len(caps) == 0 {
		return nil
	}
	known, err := r.run(ctx, "capability", "--no-pager")
	if err != nil {
		return fmt.Errorf("systemd-analyze capability: %w", err)
	}
	names := map[string]bool{}
	for _, l := range strings.Split(known, "\n") {
		if f := strings.Fields(l); len(f) > 0 {
			names[strings.ToLower(f[0])] = true
		}
	}
	for _, c := range caps {
		if !names[strings.ToLower(c)] {
			return fmt.Errorf("%s: unknown capability %s (systemd ignores it silently)", name, c)
		}
	}
	return nil
}

var exposureRE = regexp.MustCompile(`Overall exposure level for \S+: ([0-9.]+)`)

// Exposure is `systemd-analyze security --offline=yes` of name: 0 (locked
// down) to 10 (exposed).
func (r *Root) Exposure(ctx context.Context, name string) (float64, string, error) {
	out, err := r.run(ctx, "security", "--offline=yes", "--no-pager", "--root="+r.Dir, name)
	m := exposureRE.FindStringSubmatch(out)
	if m == nil {
		return 0, out, fmt.Errorf("systemd-analyze security %s: exit %v, no exposure level in:\n%s", name, err, out)
	}
	v, err := strconv.ParseFloat(m[1], 64)
	return v, out, err
}

// SyscallSet expands a unit's SystemCallFilter= values, in order, into the
// system calls they allow: the first value (an allow-list) and then each
// "~" value removing from it, groups (@system-service) expanded with
// `systemd-analyze syscall-filter`. A unit whose first value is a deny-list
// is not supported.
func SyscallSet(ctx context.Context, values []string) (map[string]bool, error) {
	tool, err := exec.LookPath("systemd-analyze")
	if err != nil {
		return nil, fmt.Errorf("systemd-analyze not found (Debian package systemd): %w", err)
	}
	groups := map[string][]string{}
	var expand func(name string, seen map[string]bool) ([]string, error)
	expand = func(name string, seen map[string]bool) ([]string, error) {
		if !strings.HasPrefix(name, "@") {
			return []string{name}, nil
		}
		if seen[name] {
			return nil, nil
		}
		seen[name] = true
		members, ok := groups[name]
		if !ok {
			out, err := exec.CommandContext(ctx, tool, "syscall-filter", "--no-pager", name).Output()
			if err != nil {
				return nil, fmt.Errorf("systemd-analyze syscall-filter %s: %w", name, err)
			}
			sc := bufio.NewScanner(strings.NewReader(string(out)))
			for sc.Scan() {
				l := strings.TrimSpace(sc.Text())
				if l == "" || l == name || strings.HasPrefix(l, "#") {
					continue
				}
				members = append(members, l)
			}
			if len(members) == 0 {
				return nil, fmt.Errorf("system call group %s is empty or unknown", name)
			}
			groups[name] = members
		}
		var all []string
		for _, m := range members {
			calls, err := expand(m, seen)
			if err != nil {
				return nil, err
			}
			all = append(all, calls...)
		}
		return all, nil
	}
	set := map[string]bool{}
	for i, v := range values {
		deny := strings.HasPrefix(v, "~")
		if i == 0 && deny {
			return nil, fmt.Errorf("SystemCallFilter=%s: a deny-list first is not supported", v)
		}
		for _, item := range strings.Fields(strings.TrimPrefix(v, "~")) {
			calls, err := expand(item, map[string]bool{})
			if err != nil {
				return nil, err
			}
			for _, c := range calls {
				if deny {
					delete(set, c)
				} else {
					set[c] = true
				}
			}
		}
	}
	return set, nil
}
