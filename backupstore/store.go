package backupstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"time"
)

// ErrNotFound is wrapped by Get and Stat when no object has the key.
var ErrNotFound = errors.New("backupstore: not found")

// Object describes one stored object.
type Object struct {
	Key     string
	Size    int64
	ModTime time.Time
}

// Store is where encrypted backup objects live. Keys are slash-separated,
// e.g. "my-app-3030/my-app-3030-20261207.age" (see ValidKey).
type Store interface {
	// Put stores everything read from r under key, atomically: the object
	// is visible (Get/Stat/List) only once complete; on any error (r fails,
	// ctx cancelled) nothing is visible and nothing is left behind (temp
	// file removed / multipart upload aborted). Replaces an existing
	// object; a failed Put leaves the one it would have replaced as it
	// was. Returns bytes written.
	Put(ctx context.Context, key string, r io.Reader) (int64, error)
	// Get streams the object; the caller closes it.
	Get(ctx context.Context, key string) (io.ReadCloser, error)
	Stat(ctx context.Context, key string) (Object, error)
	// List returns the objects whose key starts with prefix (a plain
	// string prefix, as in S3), sorted by key.
	List(ctx context.Context, prefix string) ([]Object, error)
	// Delete removes the object; deleting a missing key is not an error.
	Delete(ctx context.Context, key string) error
	// String names the store for logs and operators ("local /var/lib/…",
	// "s3 http://127.0.0.1:8333/bucket"), never with a secret.
	String() string
}

// Key limits: S3 allows 1024 bytes; a path segment is a file name on the
// local store.
const (
	maxKeyLen     = 1024
	maxSegmentLen = 255
)

// ValidKey checks a key: 1 to 1024 bytes of slash-separated segments, each
// 1 to 255 characters of [A-Za-z0-9._-] not starting with a dot (so no "."
// or "..", no hidden or temporary file names), no leading or trailing slash
// and no empty segment. Both stores refuse any other key, so a key can never
// name something outside the store.
func ValidKey(key string) error {
	if key == "" {
		return errors.New("backupstore: empty key")
	}
	if len(key) > maxKeyLen {
		return fmt.Errorf("backupstore: key of %d bytes (at most %d)", len(key), maxKeyLen)
	}
	for seg := range strings.SplitSeq(key, "/") {
		if err := validSegment(seg); err != nil {
			return fmt.Errorf("backupstore: key %q: %w", key, err)
		}
	}
	return nil
}

func validSegment(seg string) error {
	switch {
	case seg == "":
		return errors.New("empty path segment (leading, trailing or double slash)")
	case len(seg) > maxSegmentLen:
		return fmt.Errorf("path segment of %d bytes (at most %d)", len(seg), maxSegmentLen)
	case seg[0] == '.':
		return fmt.Errorf("path segment %q starts with a dot", seg)
	}
	for _, c := range []byte(seg) {
		if !keyChar(c) {
			return fmt.Errorf("character %q not allowed (only A-Z a-z 0-9 . _ -)", c)
		}
	}
	return nil
}

func keyChar(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '.' || c == '_' || c == '-'
}

// Kinds of store.
const (
	KindLocal = "local"
	KindS3    = "s3"
)

// S3 multipart part sizes: S3 refuses parts under 5 MiB (but the last) and
// over 5 GiB.
const (
	DefaultPartSize int64 = 16 << 20
	MinPartSize     int64 = 5 << 20
	MaxPartSize     int64 = 5 << 30
)

// Config selects a store (JSON in the coordinator's config file under
// "backup_store"; it also travels to agents in a backup job, secret
// included).
type Config struct {
	Kind      string `json:"kind"`               // "local" (default) or "s3"
	Dir       string `json:"dir,omitempty"`      // local: absolute directory
	Endpoint  string `json:"endpoint,omitempty"` // s3: host:port
	Bucket    string `json:"bucket,omitempty"`
	Region    string `json:"region,omitempty"`
	AccessKey string `json:"access_key,omitempty"`
	SecretKey Secret `json:"secret_key,omitempty"`
	Secure    bool   `json:"secure,omitempty"`    // TLS to the endpoint
	PartSize  int64  `json:"part_size,omitempty"` // s3 multipart part size, default 16 MiB (min 5 MiB)
}

// Validate checks c and says, in one line, what to fix. Errors never
// contain the secret key.
func (c Config) Validate() error {
	switch c.Kind {
	case "", KindLocal:
		if c.Endpoint != "" || c.Bucket != "" {
			return fmt.Errorf(`backup_store: endpoint/bucket are set but kind is %q: set "kind": "s3" to use them`, c.kind())
		}
		if c.Dir == "" {
			return errors.New(`backup_store: kind "local" needs "dir", an absolute directory (e.g. /var/lib/cacheplane/backups)`)
		}
		if !strings.HasPrefix(c.Dir, "/") {
			return fmt.Errorf("backup_store: dir %q must be an absolute path", c.Dir)
		}
	case KindS3:
		if c.Dir != "" {
			return errors.New(`backup_store: "dir" is set but kind is "s3": remove it (objects go to the bucket)`)
		}
		if err := validEndpoint(c.Endpoint); err != nil {
			return err
		}
		if err := validBucket(c.Bucket); err != nil {
			return err
		}
		if (c.AccessKey == "") != (c.SecretKey == "") {
			return errors.New(`backup_store: set both "access_key" and "secret_key", or neither (anonymous)`)
		}
		if c.PartSize != 0 && (c.PartSize < MinPartSize || c.PartSize > MaxPartSize) {
			return fmt.Errorf("backup_store: part_size %d is outside S3's limits: use 0 (default 16 MiB) or %d to %d bytes", c.PartSize, MinPartSize, MaxPartSize)
		}
	default:
		return fmt.Errorf(`backup_store: unknown kind %q: use "local" or "s3"`, c.Kind)
	}
	return nil
}

func (c Config) kind() string {
	if c.Kind == "" {
		return KindLocal
	}
	return c.Kind
}

func validEndpoint(e string) error {
	switch {
	case e == "":
		return errors.New(`backup_store: kind "s3" needs "endpoint", as host:port (e.g. 127.0.0.1:8333)`)
	case strings.Contains(e, "://"):
		return fmt.Errorf(`backup_store: endpoint %q must be host:port without a scheme (set "secure": true for https)`, e)
	case strings.ContainsAny(e, "/?#@ "):
		return fmt.Errorf("backup_store: endpoint %q must be host:port, without a path, query or credentials", e)
	}
	return nil
}

// validBucket applies S3's bucket naming rules (3-63 characters of
// lowercase letters, digits, dots and hyphens, starting and ending with a
// letter or digit).
func validBucket(b string) error {
	if b == "" {
		return errors.New(`backup_store: kind "s3" needs "bucket"`)
	}
	ok := len(b) >= 3 && len(b) <= 63 && alnumLower(b[0]) && alnumLower(b[len(b)-1]) && !strings.Contains(b, "..")
	for _, c := range []byte(b) {
		ok = ok && (alnumLower(c) || c == '.' || c == '-')
	}
	if !ok {
		return fmt.Errorf("backup_store: bucket %q is not a valid S3 bucket name (3-63 of a-z 0-9 . -, starting and ending with a letter or digit)", b)
	}
	return nil
}

func alnumLower(c byte) bool { return 'a' <= c && c <= 'z' || '0' <= c && c <= '9' }

// String describes c without its secret.
func (c Config) String() string {
	if c.kind() == KindS3 {
		return "s3 " + s3URL(c)
	}
	return "local " + c.Dir
}

// LogValue logs c without its secret key (slog would otherwise marshal it
// to JSON, secret included).
func (c Config) LogValue() slog.Value {
	attrs := []slog.Attr{slog.String("kind", c.kind())}
	if c.kind() == KindS3 {
		attrs = append(attrs, slog.String("endpoint", c.Endpoint), slog.String("bucket", c.Bucket),
			slog.Bool("secure", c.Secure), slog.Bool("credentials", c.AccessKey != ""))
	} else {
		attrs = append(attrs, slog.String("dir", c.Dir))
	}
	return slog.GroupValue(attrs...)
}

// Open validates c and opens the store it selects; a local store's
// directory is created (0700) if missing, an S3 store's bucket too.
func Open(c Config) (Store, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	if c.kind() == KindS3 {
		return NewS3(c)
	}
	return NewLocal(c.Dir)
}

// Secret is a string that is never printed: fmt (every verb), String,
// MarshalText and slog show "[REDACTED]". JSON carries the real value (the
// coordinator's config file, and jobs sent to agents); so never log a
// json.Marshal of a value that holds one.
type Secret string

const redacted = "[REDACTED]"

// Reveal returns the secret itself, for the one place that needs it.
func (s Secret) Reveal() string { return string(s) }

func (s Secret) String() string { return redacted }

// Format prints "[REDACTED]" for every verb, %#v and %q included.
func (s Secret) Format(f fmt.State, _ rune) { _, _ = io.WriteString(f, redacted) }

// LogValue redacts the secret in slog.
func (s Secret) LogValue() slog.Value { return slog.StringValue(redacted) }

// MarshalText redacts the secret for text encoders (slog's text handler,
// flag printing, YAML/TOML encoders).
func (s Secret) MarshalText() ([]byte, error) { return []byte(redacted), nil }

// MarshalJSON writes the real value: JSON must round-trip (config files,
// jobs).
func (s Secret) MarshalJSON() ([]byte, error) { return json.Marshal(string(s)) }

// UnmarshalJSON reads the value written by MarshalJSON.
func (s *Secret) UnmarshalJSON(b []byte) error {
	var v string
	if err := json.Unmarshal(b, &v); err != nil {
		return errors.New("backup_store: secret_key must be a JSON string")
	}
	*s = Secret(v)
	return nil
}
