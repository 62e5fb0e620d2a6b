package systemd

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

func readUnits(t *testing.T) map[string][]byte {
	t.Helper()
	units := map[string][]byte{}
	for _, name := range Units {
		b, err := File(name)
		if err != nil {
			t.Fatal(err)
		}
		units[name] = b
	}
	// Every *.service in the directory is in Units (and so embedded, packaged
	// and verified).
	onDisk, err := filepath.Glob("*.service")
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(onDisk)
	want := slices.Clone(Units)
	slices.Sort(want)
	if !slices.Equal(onDisk, want) {
		t.Fatalf("unit files %q, Units %q", onDisk, want)
	}
	return units
}

// TestUnitsDeclareWhatMatters checks the properties the daemons and the
// operators rely on, value by value.
func TestUnitsDeclareWhatMatters(t *testing.T) {
	units := readUnits(t)
	common := map[string]string{
		"Type": "notify", "NotifyAccess": "main", "WatchdogSec": "30s", "Restart": "on-failure",
		"StandardOutput": "journal", "StandardError": "journal", "UMask": "0077", "NoNewPrivileges": "yes",
		"PrivateTmp": "yes", "ProtectHome": "yes",
	}
	for _, tc := range []struct {
		unit    string
		argv    []string
		service map[string]string
		unitSec map[string]string
	}{
		{
			unit: "cacheplane-coordinator.service",
			argv: []string{"/usr/bin/cacheplane-coordinator", "serve", "--config", "/etc/cacheplane/coordinator.json"},
			service: map[string]string{
				"User": "cacheplane", "Group": "cacheplane",
				"RuntimeDirectory": "cacheplane", "RuntimeDirectoryMode": "0700",
				"StateDirectory": "cacheplane/coordinator", "StateDirectoryMode": "0700",
				"ProtectSystem": "strict", "CapabilityBoundingSet": "", "AmbientCapabilities": "",
				"RestrictAddressFamilies": "AF_UNIX AF_INET AF_INET6",
				"SystemCallArchitectures": "native", "PrivateDevices": "yes",
			},
		},
		{
			unit: "cacheplane-agent.service",
			argv: []string{"/usr/bin/cacheplane-agent", "--config", "/etc/cacheplane/agent.json"},
			service: map[string]string{
				// Never stop members with the agent: they live in containerd's shims.
				"KillMode":       "process",
				"StateDirectory": "cacheplane/agent", "StateDirectoryMode": "0700",
				"ProtectSystem": "full", "User": "",
			},
			unitSec: map[string]string{"Requires": "containerd.service", "After": "network-online.target containerd.service"},
		},
	} {
		t.Run(tc.unit, func(t *testing.T) {
			u, err := Parse(string(units[tc.unit]))
			if err != nil {
				t.Fatal(err)
			}
			argv, err := u.ExecStart()
			if err != nil || !slices.Equal(argv, tc.argv) {
				t.Errorf("ExecStart %q (%v), want %q", argv, err, tc.argv)
			}
			for k, want := range common {
				if got := u.Get("Service", k); got != want {
					t.Errorf("%s=%q, want %q", k, got, want)
				}
			}
			for k, want := range tc.service {
				if got := u.Get("Service", k); got != want {
					t.Errorf("%s=%q, want %q", k, got, want)
				}
				if want == "" && k != "User" && len(u["Service"][k]) == 0 {
					t.Errorf("%s= must be set (empty)", k)
				}
			}
			for k, want := range tc.unitSec {
				if got := u.Get("Unit", k); got != want {
					t.Errorf("[Unit] %s=%q, want %q", k, got, want)
				}
			}
			if got := u.Get("Install", "WantedBy"); got != "multi-user.target" {
				t.Errorf("WantedBy=%q", got)
			}
		})
	}
	u, _ := Parse(string(units["cacheplane-coordinator.service"]))
	if f := u["Service"]["SystemCallFilter"]; len(f) == 0 || f[0] != "@system-service" {
		t.Errorf("coordinator SystemCallFilter=%q, want @system-service first", f)
	}
}

func TestParse(t *testing.T) {
	u, err := Parse("# c\n[Unit]\nA=1\n; c\n[Service]\nExecStart=/bin/x \\\n  --y z\nF=a\nF=~b\nE=\n")
	if err != nil {
		t.Fatal(err)
	}
	if argv, err := u.ExecStart(); err != nil || !slices.Equal(argv, []string{"/bin/x", "--y", "z"}) {
		t.Errorf("continued ExecStart %q %v", argv, err)
	}
	if got := u["Service"]["F"]; !slices.Equal(got, []string{"a", "~b"}) {
		t.Errorf("repeated key %q", got)
	}
	if v, ok := u["Service"]["E"]; !ok || u.Get("Service", "E") != "" || len(v) != 1 {
		t.Errorf("empty value %q", v)
	}
	for _, bad := range []string{"A=1\n", "[Unit\nA=1\n", "[Unit]\nno equals\n"} {
		if _, err := Parse(bad); err == nil {
			t.Errorf("Parse(%q) accepted", bad)
		}
	}
	u, _ = Parse("[Service]\nExecStart=/bin/sh -c \"x\"\n")
	if _, err := u.ExecStart(); err == nil {
		t.Error("quoted ExecStart accepted")
	}
}

// TestUnitsVerify runs systemd-analyze verify on every unit and fails on
// any finding. The tool is required: make deps installs it.
func TestUnitsVerify(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	units := readUnits(t)
	root, err := NewRoot(ctx, t.TempDir(), units)
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range Units {
		if err := root.Verify(ctx, name); err != nil {
			t.Error(err)
		}
	}
	// systemd's own exposure score (0 best .. 10): measured 1.4 and 5.0
	// (the agent is root by need). A loosened unit fails here.
	for name, limit := range map[string]float64{"cacheplane-coordinator.service": 2.0, "cacheplane-agent.service": 6.0} {
		got, out, err := root.Exposure(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("%s: exposure %.1f", name, got)
		if got > limit {
			t.Errorf("%s: exposure %.1f > %.1f:\n%s", name, got, limit, out)
		}
	}
}

// TestVerifyCatchesBrokenUnits: the same check must fail on deliberately
// broken copies of our units, one fault each.
func TestVerifyCatchesBrokenUnits(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	units := readUnits(t)
	coord := string(units["cacheplane-coordinator.service"])
	agent := string(units["cacheplane-agent.service"])
	broken := map[string]string{
		"unknown-key.service":    replaceLine(t, coord, "WatchdogSec=30s", "WatchdogSecs=30s"),
		"bad-value.service":      replaceLine(t, coord, "Restart=on-failure", "Restart=sometimes"),
		"bad-type.service":       replaceLine(t, agent, "Type=notify", "Type=notfy"),
		"bad-killmode.service":   replaceLine(t, agent, "KillMode=process", "KillMode=gently"),
		"bad-section.service":    replaceLine(t, agent, "[Service]", "[Servce]"),
		"no-binary.service":      replaceLine(t, coord, "ExecStart=/usr/bin/cacheplane-coordinator serve --config /etc/cacheplane/coordinator.json", "ExecStart=/usr/bin/cacheplane-gone serve"),
		"bad-capability.service": strings.Replace(agent, " CAP_NET_ADMIN ", " CAP_NET_ADMINN ", 1),
		"bad-syscall.service":    replaceLine(t, coord, "SystemCallFilter=@system-service", "SystemCallFilter=@system-servce"),
		"missing-dep.service":    replaceLine(t, agent, "Requires=containerd.service", "Requires=containerd-nope.service"),
	}
	in := map[string][]byte{}
	for name, text := range broken {
		if text == coord || text == agent {
			t.Fatalf("%s: the fault was not applied (unit text changed?)", name)
		}
		in[name] = []byte(text)
	}
	root, err := NewRoot(ctx, t.TempDir(), in)
	if err != nil {
		t.Fatal(err)
	}
	// A unit whose binary is missing.
	if err := os.Remove(filepath.Join(root.Dir, "usr/bin/cacheplane-gone")); err != nil {
		t.Fatal(err)
	}
	for name := range broken {
		err := root.Verify(ctx, name)
		if err == nil {
			t.Errorf("%s: verify passed a broken unit", name)
			continue
		}
		t.Logf("%s: %v", name, err)
	}
}

func TestSyscallSet(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	set, err := SyscallSet(ctx, []string{"@system-service", "~@privileged @resources"})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []string{"read", "write", "epoll_pwait", "futex", "openat", "fsync", "flock", "accept4", "clone3"} {
		if !set[c] {
			t.Errorf("%s not allowed", c)
		}
	}
	for _, c := range []string{"setrlimit", "mount", "reboot", "setuid", "chown", "kexec_load"} {
		if set[c] {
			t.Errorf("%s allowed", c)
		}
	}
	if _, err := SyscallSet(ctx, []string{"~@mount"}); err == nil {
		t.Error("deny-list first accepted")
	}
	if _, err := SyscallSet(ctx, []string{"@no-such-group"}); err == nil {
		t.Error("unknown group accepted")
	}
}

// replaceLine replaces the one line equal to old.
func replaceLine(t *testing.T, text, old, new string) string {
	t.Helper()
	lines := strings.Split(text, "\n")
	n := 0
	for i, l := range lines {
		if l == old {
			lines[i] = new
			n++
		}
	}
	if n != 1 {
		t.Fatalf("%d lines %q, want 1", n, old)
	}
	return strings.Join(lines, "\n")
}

// TestMissingToolFails: without systemd-analyze the check fails instead of
// passing without checking anything.
func TestMissingToolFails(t *testing.T) {
	t.Setenv("PATH", t.TempDir())
	if _, err := NewRoot(context.Background(), t.TempDir(), nil); err == nil || !strings.Contains(err.Error(), "make deps") {
		t.Fatalf("NewRoot without systemd-analyze: %v", err)
	}
	if _, err := SyscallSet(context.Background(), []string{"@system-service"}); err == nil {
		t.Fatal("SyscallSet without systemd-analyze: no error")
	}
}
