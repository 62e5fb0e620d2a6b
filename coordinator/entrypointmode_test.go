package coordinator

import "testing"

func TestConfigEntrypointMode(t *testing.T) {
	for mode, ok := range map[string]bool{"": true, "haproxy": true, "kernel": true, "ipvs": false, "Kernel": false} {
		c := DefaultConfig()
		c.ID, c.DataDir = "c1", t.TempDir()
		base := c.Validate()
		c.EntrypointMode = mode
		err := c.Validate()
		if base != nil {
			t.Skipf("the default config does not validate here: %v", base)
		}
		if (err == nil) != ok {
			t.Errorf("entrypoint_mode %q: %v, want valid %v", mode, err, ok)
		}
	}
}
