package systemd

import (
	"os"
	"os/exec"
	"strings"
	"testing"
)

// TestUnitsDeclareWhatMatters checks the properties the daemons rely on:
// the agent unit must never stop members (KillMode=process), the
// coordinator's runtime directory keeps the admin socket private.
func TestUnitsDeclareWhatMatters(t *testing.T) {
	for file, wants := range map[string][]string{
		"cacheplane-coordinator.service": {"ExecStart=/usr/bin/cacheplane-coordinator serve", "RuntimeDirectoryMode=0700", "UMask=0077", "Restart=on-failure"},
		"cacheplane-agent.service":       {"ExecStart=/usr/bin/cacheplane-agent", "KillMode=process", "Requires=containerd.service", "Restart=always"},
	} {
		b, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		for _, w := range wants {
			if !strings.Contains(string(b), w) {
				t.Errorf("%s lacks %q", file, w)
			}
		}
	}
}

// TestUnitsVerify runs systemd-analyze verify when it is installed (it is
// part of the systemd package, which CI machines without systemd may lack).
func TestUnitsVerify(t *testing.T) {
	path, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Log("systemd-analyze not installed; syntax checked by TestUnitsDeclareWhatMatters only")
		return
	}
	for _, f := range []string{"cacheplane-coordinator.service", "cacheplane-agent.service"} {
		out, err := exec.Command(path, "verify", f).CombinedOutput()
		// verify complains about the missing binaries on a build machine;
		// only syntax errors matter here.
		for _, line := range strings.Split(string(out), "\n") {
			if strings.Contains(line, "Unknown") || strings.Contains(line, "Invalid") || strings.Contains(line, "Failed to parse") {
				t.Errorf("%s: %s (err %v)", f, line, err)
			}
		}
	}
}
