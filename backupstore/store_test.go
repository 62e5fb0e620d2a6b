package backupstore_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cacheplane/cacheplane/backupstore"
	"github.com/cacheplane/cacheplane/backupstore/storetest"
)

func TestValidKey(t *testing.T) {
	for _, key := range []string{
		"a",
		"my-app-3030/my-app-3030-20261207.age",
		"A_b-c.d/e.f.g/h",
		"a..b", // dots inside a segment are fine
		strings.Repeat("a", 255),
		strings.Repeat("abcdefg/", 127) + "abcdefg", // 1023 bytes
	} {
		if err := backupstore.ValidKey(key); err != nil {
			t.Errorf("ValidKey(%.40q): %v", key, err)
		}
	}
	for _, key := range storetest.BadKeys {
		if err := backupstore.ValidKey(key); err == nil {
			t.Errorf("ValidKey(%.40q): no error", key)
		}
	}
}

const secret = "s3cr3t-Value-that-must-never-show"

func TestConfigValidate(t *testing.T) {
	s3 := func(mod func(*backupstore.Config)) backupstore.Config {
		c := backupstore.Config{Kind: "s3", Endpoint: "127.0.0.1:8333", Bucket: "backups", AccessKey: "ak", SecretKey: secret}
		mod(&c)
		return c
	}
	for _, tc := range []struct {
		name string
		c    backupstore.Config
		want string // substring of the error; "" = valid
	}{
		{"local", backupstore.Config{Dir: "/var/lib/cacheplane/backups"}, ""},
		{"local explicit", backupstore.Config{Kind: "local", Dir: "/b"}, ""},
		{"local no dir", backupstore.Config{}, `needs "dir"`},
		{"local relative dir", backupstore.Config{Dir: "backups"}, "absolute"},
		{"local with endpoint", backupstore.Config{Dir: "/b", Endpoint: "127.0.0.1:8333", Bucket: "b"}, `set "kind": "s3"`},
		{"unknown kind", backupstore.Config{Kind: "S3"}, `unknown kind "S3"`},
		{"s3", s3(func(*backupstore.Config) {}), ""},
		{"s3 anonymous", s3(func(c *backupstore.Config) { c.AccessKey, c.SecretKey = "", "" }), ""},
		{"s3 part size", s3(func(c *backupstore.Config) { c.PartSize = 5 << 20 }), ""},
		{"s3 no endpoint", s3(func(c *backupstore.Config) { c.Endpoint = "" }), `needs "endpoint"`},
		{"s3 endpoint url", s3(func(c *backupstore.Config) { c.Endpoint = "http://127.0.0.1:8333" }), "without a scheme"},
		{"s3 endpoint path", s3(func(c *backupstore.Config) { c.Endpoint = "127.0.0.1:8333/backups" }), "without a path"},
		{"s3 no bucket", s3(func(c *backupstore.Config) { c.Bucket = "" }), `needs "bucket"`},
		{"s3 bad bucket", s3(func(c *backupstore.Config) { c.Bucket = "My_Backups" }), "not a valid S3 bucket name"},
		{"s3 short bucket", s3(func(c *backupstore.Config) { c.Bucket = "ab" }), "not a valid S3 bucket name"},
		{"s3 secret only", s3(func(c *backupstore.Config) { c.AccessKey = "" }), `both "access_key" and "secret_key"`},
		{"s3 access only", s3(func(c *backupstore.Config) { c.SecretKey = "" }), `both "access_key" and "secret_key"`},
		{"s3 small part", s3(func(c *backupstore.Config) { c.PartSize = 1 << 20 }), "part_size 1048576"},
		{"s3 with dir", s3(func(c *backupstore.Config) { c.Dir = "/b" }), `"dir" is set but kind is "s3"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.c.Validate()
			if tc.want == "" {
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Validate = %v, want an error containing %q", err, tc.want)
			}
			if msg := err.Error(); strings.Contains(msg, secret) || strings.Contains(msg, "\n") {
				t.Fatalf("error %q: want one line without the secret", msg)
			}
		})
	}
}

// The secret key is never printed (fmt, slog, text), and JSON round-trips
// it.
func TestSecretRedacted(t *testing.T) {
	c := backupstore.Config{Kind: "s3", Endpoint: "127.0.0.1:8333", Bucket: "backups", AccessKey: "ak", SecretKey: secret}
	var logged bytes.Buffer
	slog.New(slog.NewJSONHandler(&logged, nil)).Info("store", "config", c, "secret", c.SecretKey, "ptr", &c)
	slog.New(slog.NewTextHandler(&logged, nil)).Info("store", "config", c, "secret", c.SecretKey)
	text, _ := c.SecretKey.MarshalText()
	for _, s := range []string{
		fmt.Sprint(c), fmt.Sprintf("%v %+v %#v %s %q %x", c, c, c, c, c, c), fmt.Sprintf("%+v", &c),
		fmt.Sprintf("%v %s %q %x %#v %d", c.SecretKey, c.SecretKey, c.SecretKey, c.SecretKey, c.SecretKey, c.SecretKey),
		fmt.Sprintf("%+v", struct{ S backupstore.Secret }{c.SecretKey}),
		c.String(), c.SecretKey.String(), string(text), logged.String(),
	} {
		if strings.Contains(s, secret) || strings.Contains(s, fmt.Sprintf("%x", secret)) {
			t.Fatalf("printed the secret: %s", s)
		}
	}
	if got := c.String(); got != "s3 http://127.0.0.1:8333/backups" {
		t.Fatalf("String() = %q", got)
	}
	b, err := json.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	var back backupstore.Config
	if err := json.Unmarshal(b, &back); err != nil || back != c {
		t.Fatalf("JSON round trip: %+v, %v (from %s)", back, err, b)
	}
	if c.SecretKey.Reveal() != secret {
		t.Fatal("Reveal does not return the secret")
	}
	if err := json.Unmarshal([]byte(`{"secret_key": 42}`), &back); err == nil || strings.Contains(err.Error(), "42") {
		t.Fatalf("a non-string secret: %v, want an error not quoting it", err)
	}
}

func TestOpenLocal(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "backups")
	s, err := backupstore.Open(backupstore.Config{Dir: dir})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	if _, ok := s.(*backupstore.Local); !ok || s.String() != "local "+dir {
		t.Fatalf("Open = %T %s, want a local store in %s", s, s, dir)
	}
	if _, err := backupstore.Open(backupstore.Config{Kind: "ftp"}); err == nil {
		t.Fatal("Open of an unknown kind: no error")
	}
}
