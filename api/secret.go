package api

import (
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
)

// Redaction is what a Secret prints instead of itself.
const Redaction = "[REDACTED]"

// Secret is a credential (an addon's password, the fleet's credential of an
// addon, which is also its sentinels' password) that cannot be printed by
// accident: it is a struct with an unexported field, so no conversion to
// string exists, and every way of printing it shows Redaction — String,
// GoString, fmt's every verb (%v, %+v, %#v, %s, %q, %x…, also when it is a
// field of a struct or an element of a slice printed with fmt, and inside an
// error built with fmt.Errorf), MarshalText (slog's text handler, flag and
// YAML/TOML encoders) and slog's LogValue.
//
// JSON carries the real value: JSON is cacheplane's wire (the Raft log and
// snapshots, the agents' assignments and jobs, the env answer), and
// MarshalJSON is the one printing path that reveals it. The types that hold
// a Secret and are likely to be logged (Addon, Assignment, BackupJob)
// implement slog.LogValuer with their secrets left out, so slog's JSON
// handler, which json-encodes any other value, never reaches their
// MarshalJSON. Reveal is the explicit way out, for the few places that must
// hand the value to something else (a redis client, a rendered file, a URL).
//
// The zero Secret is empty (IsZero).
type Secret struct{ v string }

// NewSecret wraps s.
func NewSecret(s string) Secret { return Secret{v: s} }

// Reveal returns the secret itself. Call it only where the value leaves for
// its one destination (a redis AUTH, a rendered file, a URL printed by env).
func (s Secret) Reveal() string { return s.v }

// IsZero reports whether the secret is empty (also what json's omitzero
// tests).
func (s Secret) IsZero() bool { return s.v == "" }

// Equal compares two secrets in constant time.
func (s Secret) Equal(o Secret) bool {
	return subtle.ConstantTimeCompare([]byte(s.v), []byte(o.v)) == 1
}

// String returns Redaction.
func (s Secret) String() string { return Redaction }

// GoString returns Redaction (%#v).
func (s Secret) GoString() string { return Redaction }

// Format prints Redaction for every verb and flag.
func (s Secret) Format(f fmt.State, _ rune) { _, _ = io.WriteString(f, Redaction) }

// LogValue redacts the secret in slog (text and JSON handlers).
func (s Secret) LogValue() slog.Value { return slog.StringValue(Redaction) }

// MarshalText returns Redaction: text encoders never see the value.
func (s Secret) MarshalText() ([]byte, error) { return []byte(Redaction), nil }

// MarshalJSON writes the value: JSON is the wire (see Secret).
func (s Secret) MarshalJSON() ([]byte, error) { return json.Marshal(s.v) }

// UnmarshalJSON reads a JSON string. Its error never holds the input.
func (s *Secret) UnmarshalJSON(b []byte) error {
	var v string
	if err := json.Unmarshal(b, &v); err != nil {
		return errors.New("a secret must be a JSON string")
	}
	s.v = v
	return nil
}
