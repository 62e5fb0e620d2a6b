package cli

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/cacheplane/cacheplane/coordinator"
)

// The CLI's copies of the coordinator's paths must not drift.
func TestDefaultPathsMatchCoordinator(t *testing.T) {
	if DefaultConfigPath != coordinator.DefaultConfigPath || DefaultSocketPath != coordinator.DefaultSocketPath {
		t.Fatalf("cli %q %q, coordinator %q %q", DefaultConfigPath, DefaultSocketPath,
			coordinator.DefaultConfigPath, coordinator.DefaultSocketPath)
	}
}

// TestSocketFromConfig: the CLI finds the socket the daemon listens on, as
// coordinator.LoadConfigFile + Validate would.
func TestSocketFromConfig(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		name, config string // "" config: no file
		want         string
	}{
		{name: "no file", want: DefaultSocketPath},
		{name: "socket named", config: `{"socket": "/srv/c/admin.sock", "data_dir": "/srv/c"}`, want: "/srv/c/admin.sock"},
		{name: "socket empty: in the data dir", config: `{"socket": "", "data_dir": "/srv/c"}`, want: "/srv/c/admin.sock"},
		{name: "socket not named: the default", config: `{"data_dir": "/srv/c"}`, want: DefaultSocketPath},
		{name: "fields the CLI does not read", config: `{"raft_addr": "10.0.0.1:7400", "socket": "/x.sock", "backup_store": {"kind": "s3"}}`, want: "/x.sock"},
		{name: "not JSON", config: `socket = /x.sock`, want: DefaultSocketPath},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(dir, tc.name+".json")
			if tc.config != "" {
				if err := os.WriteFile(path, []byte(tc.config), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			if got := socketFromConfig(path); got != tc.want {
				t.Errorf("socket %q, want %q", got, tc.want)
			}
			if tc.config == "" || tc.name == "not JSON" || tc.name == "fields the CLI does not read" {
				return
			}
			// Same answer as the daemon's own reading of the file.
			cfg, err := coordinator.LoadConfigFile(path, true)
			if err != nil {
				t.Fatal(err)
			}
			if cfg.Socket == "" {
				cfg.Socket = filepath.Join(cfg.DataDir, "admin.sock")
			}
			if cfg.Socket != tc.want {
				t.Errorf("daemon reads %q, CLI %q", cfg.Socket, tc.want)
			}
		})
	}
}

func TestNoServeWithoutDaemon(t *testing.T) {
	for _, c := range NewRoot("cacheplane").Commands() {
		if c.Name() == "serve" {
			t.Fatal("package cli alone registers serve")
		}
	}
}
