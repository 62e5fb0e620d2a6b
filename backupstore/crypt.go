package backupstore

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"

	"filippo.io/age"
)

// ErrCorrupt is wrapped by Unseal and by reads of its reader when the sealed
// bytes do not authenticate: a flipped, missing or added byte anywhere, or a
// backup sealed with another key.
var ErrCorrupt = errors.New("backupstore: backup is corrupt or was not written with this key")

// ErrUnknownKey is wrapped by Unseal when the key id is not in the keyring
// (a key removed from the config while backups sealed with it remain).
var ErrUnknownKey = errors.New("backupstore: key id not in the keyring")

// maxKeyIDLen bounds a key id (it is stored with every backup record).
const maxKeyIDLen = 64

// Keyring holds the age X25519 identities backups are sealed with, by id.
// Seal uses Current; Unseal uses the id recorded with the backup, so keys
// rotate by adding a new key, making it Current, and removing an old one
// only once no kept backup was sealed with it. Its JSON form (the
// coordinator's config file) is {"current": "2026-12", "keys": {"2026-12":
// "AGE-SECRET-KEY-1…"}}; fmt and slog print ids only, never a key.
type Keyring struct {
	Current string            `json:"current"`
	Keys    map[string]string `json:"keys"` // id -> "AGE-SECRET-KEY-1..."
}

// GenerateKey returns a new age X25519 identity ("AGE-SECRET-KEY-1…").
func GenerateKey() (string, error) {
	id, err := age.GenerateX25519Identity()
	if err != nil {
		return "", fmt.Errorf("backupstore: generate key: %w", err)
	}
	return id.String(), nil
}

// Validate checks that Current names a key and that every key parses.
// Errors name key ids, never a key.
func (k Keyring) Validate() error {
	if len(k.Keys) == 0 {
		return errors.New(`backup keyring: no keys: add one under "keys" (cacheplane can generate one) and name it in "current"`)
	}
	if k.Current == "" {
		return errors.New(`backup keyring: "current" is empty: name the key new backups are sealed with`)
	}
	if _, ok := k.Keys[k.Current]; !ok {
		return fmt.Errorf("backup keyring: current key %q is not among the keys (%s)", k.Current, strings.Join(k.ids(), ", "))
	}
	for _, id := range k.ids() {
		if err := validKeyID(id); err != nil {
			return err
		}
		if _, err := parseKey(id, k.Keys[id]); err != nil {
			return err
		}
	}
	return nil
}

func (k Keyring) ids() []string {
	ids := make([]string, 0, len(k.Keys))
	for id := range k.Keys {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	return ids
}

func validKeyID(id string) error {
	ok := id != "" && len(id) <= maxKeyIDLen
	for _, c := range []byte(id) {
		ok = ok && keyChar(c)
	}
	if !ok {
		return fmt.Errorf("backup keyring: key id %q: use 1 to %d characters of A-Z a-z 0-9 . _ -", id, maxKeyIDLen)
	}
	return nil
}

// parseKey parses one key; its error names the id only (age's own error
// may quote characters of the key).
func parseKey(id, key string) (*age.X25519Identity, error) {
	ident, err := age.ParseX25519Identity(strings.TrimSpace(key))
	if err != nil {
		return nil, fmt.Errorf(`backup keyring: key %q is not an age X25519 secret key ("AGE-SECRET-KEY-1" followed by 58 characters)`, id)
	}
	return ident, nil
}

// String lists the key ids, never a key.
func (k Keyring) String() string {
	return fmt.Sprintf("keyring current=%s ids=[%s]", k.Current, strings.Join(k.ids(), " "))
}

// GoString keeps %#v from printing the keys.
func (k Keyring) GoString() string { return k.String() }

// LogValue logs the key ids, never a key.
func (k Keyring) LogValue() slog.Value {
	return slog.GroupValue(slog.String("current", k.Current), slog.Any("ids", k.ids()))
}

// Seal returns a writer that encrypts into dst with the Current key (age:
// X25519, then ChaCha20-Poly1305 in 64 KiB chunks); Close finishes the age
// stream (it does not close dst). keyID is the id to record with the
// backup for Unseal.
func Seal(dst io.Writer, k Keyring) (w io.WriteCloser, keyID string, err error) {
	if err := k.Validate(); err != nil {
		return nil, "", err
	}
	ident, err := parseKey(k.Current, k.Keys[k.Current])
	if err != nil {
		return nil, "", err
	}
	w, err = age.Encrypt(dst, ident.Recipient())
	if err != nil {
		return nil, "", fmt.Errorf("backupstore: seal: %w", err)
	}
	return w, k.Current, nil
}

// Unseal decrypts src, sealed with key keyID. A wrong key or a damaged
// header fails here; a damaged or truncated body fails the read that
// reaches it; both wrap ErrCorrupt. An error of src itself (a network read)
// is returned as it is, not as corruption. Plaintext read before an error
// is not authenticated as a whole: use it only once a read returned io.EOF.
func Unseal(src io.Reader, k Keyring, keyID string) (io.Reader, error) {
	key, ok := k.Keys[keyID]
	if !ok {
		return nil, fmt.Errorf("%w: %q (the keyring has %s)", ErrUnknownKey, keyID, strings.Join(k.ids(), ", "))
	}
	ident, err := parseKey(keyID, key)
	if err != nil {
		return nil, err
	}
	sr := &srcReader{r: src}
	r, err := age.Decrypt(sr, ident)
	if err != nil {
		return nil, sr.classify(err)
	}
	return &unsealReader{r: r, src: sr}, nil
}

// srcReader records the first error of the sealed stream's source, so that
// an I/O failure is not reported as corruption.
type srcReader struct {
	r   io.Reader
	err error
}

func (s *srcReader) Read(p []byte) (int, error) {
	n, err := s.r.Read(p)
	if err != nil && err != io.EOF && s.err == nil {
		s.err = err
	}
	return n, err
}

func (s *srcReader) classify(err error) error {
	if s.err != nil {
		return fmt.Errorf("backupstore: read sealed backup: %w", s.err)
	}
	return fmt.Errorf("%w: %v", ErrCorrupt, err)
}

type unsealReader struct {
	r   io.Reader
	src *srcReader
}

func (u *unsealReader) Read(p []byte) (int, error) {
	n, err := u.r.Read(p)
	if err != nil && err != io.EOF {
		err = u.src.classify(err)
	}
	return n, err
}
