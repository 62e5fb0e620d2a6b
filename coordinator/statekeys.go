package coordinator

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"time"

	"github.com/hashicorp/raft"
)

// State keys encrypt what the coordinators keep at rest — Raft log entries
// and snapshots, which hold every addon's passwords — with AES-256-GCM.
// The keyring comes from the coordinator's config (state_keys_file, made
// with a new key when missing; every coordinator of a cluster must hold
// the same one, which the leader checks before it seals anything). Each
// sealed blob names the id of its key, so a new key can become current
// while older entries stay readable; after a snapshot the old key may go.

// StateKeyring is the keyring of state_keys_file. It never prints a key.
type StateKeyring struct {
	Current string
	keys    map[string][]byte
}

// stateKeysFile is the file's JSON form: {"current": ID, "keys": {ID: base64 of 32 bytes}}.
type stateKeysFile struct {
	Current string            `json:"current"`
	Keys    map[string]string `json:"keys"`
}

// String names the keyring without a key.
func (k StateKeyring) String() string {
	return fmt.Sprintf("state keyring (current %s, %d keys)", k.Current, len(k.keys))
}

// GoString is String: %#v prints no key either.
func (k StateKeyring) GoString() string { return k.String() }

// LogValue is String for slog.
func (k StateKeyring) LogValue() slog.Value { return slog.StringValue(k.String()) }

// MarshalJSON refuses: a keyring is written by createStateKeys only.
func (k StateKeyring) MarshalJSON() ([]byte, error) {
	return nil, errors.New("a state keyring is never marshalled")
}

// Empty reports whether the keyring holds no key (sealing is off).
func (k StateKeyring) Empty() bool { return len(k.keys) == 0 }

// IDs lists the key ids, sorted.
func (k StateKeyring) IDs() []string {
	ids := make([]string, 0, len(k.keys))
	for id := range k.keys {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	return ids
}

// Check is the current key's check value: its id and an HMAC of a fixed
// text under it. Two members seal for each other only when their checks
// are equal; the check reveals nothing of the key.
func (k StateKeyring) Check() string {
	key, ok := k.keys[k.Current]
	if !ok {
		return ""
	}
	m := hmac.New(sha256.New, key)
	m.Write([]byte("cacheplane state key check v1"))
	return k.Current + ":" + hex.EncodeToString(m.Sum(nil))[:16]
}

// parseStateKeys reads the file's JSON and checks it.
func parseStateKeys(data []byte) (StateKeyring, error) {
	var f stateKeysFile
	if err := json.Unmarshal(data, &f); err != nil {
		return StateKeyring{}, fmt.Errorf(`not a keyring ({"current": ID, "keys": {ID: base64 of 32 bytes}}): %s`, jsonProblem(err))
	}
	k := StateKeyring{Current: f.Current, keys: map[string][]byte{}}
	for id, s := range f.Keys {
		if id == "" || len(id) > 64 {
			return StateKeyring{}, fmt.Errorf("key id %q: want 1 to 64 characters", id)
		}
		b, err := base64.StdEncoding.DecodeString(s)
		if err != nil || len(b) != 32 {
			return StateKeyring{}, fmt.Errorf("key %s: want the base64 of 32 random bytes", id)
		}
		k.keys[id] = b
	}
	if _, ok := k.keys[k.Current]; !ok {
		return StateKeyring{}, fmt.Errorf("current key %q is not in keys", k.Current)
	}
	return k, nil
}

// LoadStateKeys reads state_keys_file, making it with one new key when it
// does not exist (created is then true). A file others can read is
// refused.
func LoadStateKeys(path string, now time.Time) (k StateKeyring, created bool, err error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		if err := createStateKeys(path, now); err != nil {
			return k, false, err
		}
		created = true
		data, err = os.ReadFile(path)
	}
	if err != nil {
		return k, false, fmt.Errorf("state_keys_file: %w", err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		return k, false, fmt.Errorf("state_keys_file: %w", err)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return k, false, fmt.Errorf("state_keys_file %s is readable by others (mode %04o): it holds the key of every password at rest; chmod 600 it", path, fi.Mode().Perm())
	}
	k, err = parseStateKeys(data)
	if err != nil {
		return k, false, fmt.Errorf("state_keys_file %s: %w", path, err)
	}
	return k, created, nil
}

// NewStateKeysFile returns the content of a new state keys file with one
// key (tests and tooling that give several coordinators the same file).
func NewStateKeysFile(now time.Time) ([]byte, error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return nil, fmt.Errorf("state key: %w", err)
	}
	id := "s" + now.UTC().Format("20060102")
	data, err := json.MarshalIndent(stateKeysFile{Current: id, Keys: map[string]string{id: base64.StdEncoding.EncodeToString(b)}}, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("state key: encode: %w", err)
	}
	return append(data, '\n'), nil
}

func createStateKeys(path string, now time.Time) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return fmt.Errorf("state_keys_file: %w", err)
	}
	data, err := NewStateKeysFile(now)
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".state-keys-*")
	if err != nil {
		return fmt.Errorf("state_keys_file: %w", err)
	}
	defer os.Remove(tmp.Name())
	err = tmp.Chmod(0o600)
	if err == nil {
		_, err = tmp.Write(data)
	}
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("state_keys_file: write %s: %w", tmp.Name(), err)
	}
	// Link, not rename: a file another process made meanwhile wins.
	if err := os.Link(tmp.Name(), path); err != nil && !errors.Is(err, os.ErrExist) {
		return fmt.Errorf("state_keys_file: %w", err)
	}
	return nil
}

// sealedVersion is the first byte of a sealed blob.
const sealedVersion = 1

// errUnsealable means a sealed blob could not be opened: an unknown key id
// or a failed authentication.
var errUnsealable = errors.New("cannot open sealed state")

// seal encrypts plain under the current key: version, id length, id,
// nonce, then the GCM ciphertext with the id as additional data.
func (k StateKeyring) seal(plain []byte) ([]byte, error) {
	key, ok := k.keys[k.Current]
	if !ok {
		return nil, errors.New("seal: no current state key")
	}
	aead, err := newAEAD(key)
	if err != nil {
		return nil, err
	}
	id := []byte(k.Current)
	out := make([]byte, 0, 2+len(id)+aead.NonceSize()+len(plain)+aead.Overhead())
	out = append(out, sealedVersion, byte(len(id)))
	out = append(out, id...)
	nonce := make([]byte, aead.NonceSize())
	if _, err := rand.Read(nonce); err != nil {
		return nil, fmt.Errorf("seal: nonce: %w", err)
	}
	out = append(out, nonce...)
	return aead.Seal(out, nonce, plain, id), nil
}

// open decrypts a blob made by seal under any key of the keyring.
func (k StateKeyring) open(blob []byte) ([]byte, error) {
	if len(blob) < 2 || blob[0] != sealedVersion || len(blob) < 2+int(blob[1]) {
		return nil, fmt.Errorf("%w: not a sealed blob", errUnsealable)
	}
	id := blob[2 : 2+int(blob[1])]
	key, ok := k.keys[string(id)]
	if !ok {
		return nil, fmt.Errorf("%w: sealed with key %q, which state_keys_file does not hold (have %v)", errUnsealable, id, k.IDs())
	}
	aead, err := newAEAD(key)
	if err != nil {
		return nil, err
	}
	rest := blob[2+len(id):]
	if len(rest) < aead.NonceSize()+aead.Overhead() {
		return nil, fmt.Errorf("%w: truncated", errUnsealable)
	}
	plain, err := aead.Open(nil, rest[:aead.NonceSize()], rest[aead.NonceSize():], id)
	if err != nil {
		return nil, fmt.Errorf("%w: key %q does not authenticate it (another key under the same id, or tampered)", errUnsealable, id)
	}
	return plain, nil
}

func newAEAD(key []byte) (cipher.AEAD, error) {
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("state key: %w", err)
	}
	return cipher.NewGCM(block)
}

// sealedSnapshotMagic starts a sealed snapshot; an unsealed one is JSON
// (which an older release reads, and which cannot start with this).
const sealedSnapshotMagic = "cacheplane sealed state v1\n"

// sealable says whether state may be sealed with k for every coordinator
// the state knows: each records a protocol level that applies CmdSealed
// and the same current state key as k.
func (st *State) sealable(k StateKeyring) bool {
	if k.Empty() || len(st.Coordinators) == 0 {
		return false
	}
	need, _ := CmdSealed.Since()
	check := k.Check()
	for _, m := range st.Coordinators {
		if max(m.Protocol, ProtocolBase) < need || m.StateKey != check {
			return false
		}
	}
	return true
}

// StateKeyCheck is this member's current state key check value ("" when
// sealing is off).
func (s *Store) StateKeyCheck() string { return s.fsm.keys.Check() }

// sealing says whether the leader seals the entries it proposes now:
// every member of the Raft configuration applies CmdSealed and reports
// the same current state key as this one. Else it writes them unsealed
// and says why (sealingWhy).
func (s *Store) sealing() (bool, string) {
	if s.fsm.keys.Empty() {
		return false, "no state keys"
	}
	if err := s.Supports(CmdSealed); err != nil {
		return false, err.Error()
	}
	ms, err := s.memberLevels()
	if err != nil {
		return false, err.Error()
	}
	own := s.StateKeyCheck()
	for _, m := range ms {
		if m.StateKey != own {
			key := m.StateKey
			if key == "" {
				key = "none reported yet"
			}
			return false, fmt.Sprintf("member %s reports state key %s, this one %s: give every coordinator the same state_keys_file", m.ID, key, own)
		}
	}
	return true, ""
}

// sealEntry wraps an encoded entry ([type][json]) as a CmdSealed entry.
func (k StateKeyring) sealEntry(data []byte) ([]byte, error) {
	blob, err := k.seal(data)
	if err != nil {
		return nil, err
	}
	return append([]byte{byte(CmdSealed)}, blob...), nil
}

// Store.sealMode values.
const (
	sealOn  int32 = 1
	sealOff int32 = 2
)

// opensLatest checks, before Raft starts, that the keys open this member's
// latest snapshot when it is sealed (Raft would only say it failed to
// load any snapshot).
func (k StateKeyring) opensLatest(snaps raft.SnapshotStore) error {
	metas, err := snaps.List()
	if err != nil || len(metas) == 0 {
		return nil // Raft reports a broken store itself
	}
	_, rc, err := snaps.Open(metas[0].ID)
	if err != nil {
		return nil
	}
	defer rc.Close()
	data, err := io.ReadAll(rc)
	if err != nil {
		return nil
	}
	rest, sealed := bytes.CutPrefix(data, []byte(sealedSnapshotMagic))
	if !sealed {
		return nil
	}
	if _, err := k.open(rest); err != nil {
		return fmt.Errorf("state_keys_file: this member's snapshot %s cannot be opened with it (%w): "+
			"start it with the state keys it was written with (every coordinator of a cluster holds the same file)", metas[0].ID, err)
	}
	return nil
}
