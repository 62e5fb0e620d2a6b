package coordinator

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func testStateKeys(t *testing.T, now time.Time) StateKeyring {
	t.Helper()
	data, err := NewStateKeysFile(now)
	if err != nil {
		t.Fatal(err)
	}
	k, err := parseStateKeys(data)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func TestStateKeysSealOpen(t *testing.T) {
	t0 := time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC)
	k := testStateKeys(t, t0)
	secret := []byte(`{"password":"hunter2-very-secret"}`)
	blob, err := k.seal(secret)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(blob, []byte("hunter2")) {
		t.Fatal("sealed blob holds the plaintext")
	}
	again, _ := k.seal(secret)
	if bytes.Equal(blob, again) {
		t.Fatal("two seals of the same text are equal (nonce reused)")
	}
	got, err := k.open(blob)
	if err != nil || !bytes.Equal(got, secret) {
		t.Fatalf("open: %q, %v", got, err)
	}

	// Rotation: a keyring with a new current key still opens old blobs.
	k2 := testStateKeys(t, t0.Add(48*time.Hour))
	rotated := StateKeyring{Current: k2.Current, keys: map[string][]byte{k.Current: k.keys[k.Current], k2.Current: k2.keys[k2.Current]}}
	if got, err := rotated.open(blob); err != nil || !bytes.Equal(got, secret) {
		t.Fatalf("rotated keyring opens an old blob: %q, %v", got, err)
	}
	nb, _ := rotated.seal(secret)
	if !bytes.Contains(nb[:20], []byte(k2.Current)) {
		t.Fatalf("new blob not under the current key %s", k2.Current)
	}

	for name, c := range map[string]struct {
		k    StateKeyring
		blob []byte
		want string
	}{
		"flipped byte":      {k, flip(blob, len(blob)-3), "does not authenticate"},
		"flipped id":        {k, flip(blob, 3), "does not hold"},
		"other key same id": {testStateKeys(t, t0), blob, "does not authenticate"},
		"unknown key":       {k2, blob, "does not hold"},
		"truncated":         {k, blob[:20], "truncated"},
		"not sealed":        {k, []byte(`{"x":1}`), "not a sealed blob"},
		"empty":             {k, nil, "not a sealed blob"},
	} {
		_, err := c.k.open(c.blob)
		if !errors.Is(err, errUnsealable) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v; want errUnsealable saying %q", name, err, c.want)
		}
	}
	if k.Check() == k2.Check() || k.Check() == testStateKeys(t, t0).Check() || !strings.HasPrefix(k.Check(), k.Current+":") {
		t.Errorf("checks: %s %s", k.Check(), k2.Check())
	}
}

func flip(b []byte, i int) []byte {
	c := bytes.Clone(b)
	c[i] ^= 0x01
	return c
}

func TestStateKeysNeverPrinted(t *testing.T) {
	k := testStateKeys(t, time.Now())
	key := k.keys[k.Current]
	var buf bytes.Buffer
	slog.New(slog.NewJSONHandler(&buf, nil)).Info("x", "keys", k)
	slog.New(slog.NewTextHandler(&buf, nil)).Info("x", "keys", k)
	fmt.Fprintf(&buf, "%v %+v %#v %s", k, k, k, k)
	if _, err := json.Marshal(k); err == nil {
		t.Error("keyring marshalled to JSON")
	}
	out := buf.String()
	for _, enc := range []string{string(key), fmt.Sprintf("%x", key), fmt.Sprint(key)} {
		if strings.Contains(out, enc) {
			t.Fatalf("key printed: %s", out)
		}
	}
	if !strings.Contains(out, "state keyring (current "+k.Current) {
		t.Fatalf("keyring not named: %s", out)
	}
}

func TestLoadStateKeys(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "sub", "state-keys.json")
	k, created, err := LoadStateKeys(path, time.Now())
	if err != nil || !created || k.Empty() {
		t.Fatalf("first load: %v created %v", err, created)
	}
	fi, _ := os.Stat(path)
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("mode %v", fi.Mode().Perm())
	}
	k2, created, err := LoadStateKeys(path, time.Now())
	if err != nil || created || k2.Check() != k.Check() {
		t.Fatalf("second load: %v created %v", err, created)
	}
	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, _, err := LoadStateKeys(path, time.Now()); err == nil || !strings.Contains(err.Error(), "chmod 600") {
		t.Fatalf("world-readable file: %v", err)
	}
	for name, content := range map[string]string{
		"not json":   `nope`,
		"short key":  `{"current":"a","keys":{"a":"AAAA"}}`,
		"no current": `{"current":"b","keys":{"a":"` + strings.Repeat("A", 43) + `="}}`,
		"bad base64": `{"current":"a","keys":{"a":"***"}}`,
	} {
		p := filepath.Join(dir, strings.ReplaceAll(name, " ", "-"))
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		if _, _, err := LoadStateKeys(p, time.Now()); err == nil || strings.Contains(err.Error(), "AAAA") {
			t.Errorf("%s: %v", name, err)
		}
	}
}
