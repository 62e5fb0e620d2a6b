package e2e

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// debianPython is Debian's python3, which python3-redis installs redis-py
// for (scripts/deps-system.sh); another python3 on PATH (pyenv) lacks it.
const debianPython = "/usr/bin/python3"

// redisPy runs e2e/python/clients.py with REDIS_URL=url and, when caFile
// is set, the CA: whether redis-py's PING, SET and GET went through, and
// its error.
func redisPy(t testing.TB, url, caFile string) (ok bool, errText string) {
	t.Helper()
	root, err := moduleRoot()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(debianPython); err != nil {
		t.Fatalf("%s is missing: install python3-redis (make deps-system): %v", debianPython, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, debianPython, filepath.Join(root, "e2e", "python", "clients.py"))
	env := map[string]string{"REDIS_URL": url}
	if caFile != "" {
		env["CA_FILE"] = caFile
	}
	cmd.Env = hermeticEnv(env)
	out, err := cmd.Output()
	if err != nil {
		var stderr string
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = string(ee.Stderr)
		}
		t.Fatalf("python3 clients.py: %v: %s %s (is python3-redis installed? make deps-system)", err, out, stderr)
	}
	var r struct {
		Client string `json:"client"`
		OK     bool   `json:"ok"`
		Error  string `json:"error"`
	}
	if err := json.Unmarshal([]byte(strings.TrimSpace(string(out))), &r); err != nil || r.Client != "redis-py" {
		t.Fatalf("python3 clients.py printed %q: %v", out, err)
	}
	return r.OK, r.Error
}

// checkRedisPy: redis-py works through the rediss:// URL with the CA
// from addons-ca, and refuses the server without it (the certificate is
// verified, not merely encrypted).
func checkRedisPy(t testing.TB, url, password, caFile string) {
	t.Helper()
	if ok, e := redisPy(t, url, caFile); !ok {
		t.Errorf("redis-py through the rediss:// URL with the CA: %s", scrub(e, password))
	}
	if ok, _ := redisPy(t, url, ""); ok {
		t.Errorf("redis-py through the rediss:// URL without the CA went through: the certificate was not verified")
	}
}
