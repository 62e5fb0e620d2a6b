package backupstore_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"strings"
	"testing"
	"testing/iotest"

	"github.com/cacheplane/cacheplane/backupstore"
)

func genKey(t *testing.T) string {
	t.Helper()
	k, err := backupstore.GenerateKey()
	if err != nil {
		t.Fatalf("GenerateKey: %v", err)
	}
	return k
}

func keyring(t *testing.T, current string, ids ...string) backupstore.Keyring {
	t.Helper()
	k := backupstore.Keyring{Current: current, Keys: map[string]string{}}
	for _, id := range ids {
		k.Keys[id] = genKey(t)
	}
	return k
}

func seal(t *testing.T, k backupstore.Keyring, plain []byte) ([]byte, string) {
	t.Helper()
	var buf bytes.Buffer
	w, id, err := backupstore.Seal(&buf, k)
	if err != nil {
		t.Fatalf("Seal: %v", err)
	}
	if _, err := w.Write(plain); err != nil {
		t.Fatalf("Seal write: %v", err)
	}
	if err := w.Close(); err != nil {
		t.Fatalf("Seal close: %v", err)
	}
	return buf.Bytes(), id
}

// unseal reads everything, returning the first error.
func unseal(sealed []byte, k backupstore.Keyring, id string) ([]byte, error) {
	r, err := backupstore.Unseal(bytes.NewReader(sealed), k, id)
	if err != nil {
		return nil, err
	}
	return io.ReadAll(r)
}

func TestGenerateKey(t *testing.T) {
	a, b := genKey(t), genKey(t)
	if !strings.HasPrefix(a, "AGE-SECRET-KEY-1") || a == b {
		t.Fatalf("GenerateKey: %.16s…, %.16s…: want two distinct age secret keys", a, b)
	}
	if err := (backupstore.Keyring{Current: "k1", Keys: map[string]string{"k1": a}}).Validate(); err != nil {
		t.Fatalf("a generated key does not validate: %v", err)
	}
}

// A multi-MiB stream round-trips through Seal and Unseal, streamed (odd
// write and read sizes), and the sealed bytes hold no plaintext.
func TestSealRoundTrip(t *testing.T) {
	k := keyring(t, "k1", "k1")
	const size = 5<<20 + 12345 // several 64 KiB chunks and a partial last one
	marker := []byte("PLAINTEXT-MARKER-the-value-of-a-secret-redis-key")
	plain, _ := io.ReadAll(io.LimitReader(rand.NewChaCha8([32]byte{1}), size))
	for off := 0; off+len(marker) < size; off += 1 << 20 {
		copy(plain[off:], marker)
	}
	var sealed bytes.Buffer
	w, id, err := backupstore.Seal(&sealed, k)
	if err != nil || id != "k1" {
		t.Fatalf("Seal = %q, %v; want key id k1", id, err)
	}
	if _, err := io.CopyBuffer(w, iotest.HalfReader(bytes.NewReader(plain)), make([]byte, 7777)); err != nil {
		t.Fatalf("write: %v", err)
	}
	if err := w.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}
	if bytes.Contains(sealed.Bytes(), marker) || bytes.Contains(sealed.Bytes(), plain[100:164]) {
		t.Fatal("the sealed bytes contain plaintext")
	}
	if sealed.Len() < size || sealed.Len() > size+size/100+1024 {
		t.Fatalf("sealed %d bytes into %d: want about the same size", size, sealed.Len())
	}
	r, err := backupstore.Unseal(iotest.HalfReader(bytes.NewReader(sealed.Bytes())), k, id)
	if err != nil {
		t.Fatalf("Unseal: %v", err)
	}
	h := sha256.New()
	if _, err := io.CopyBuffer(h, iotest.HalfReader(r), make([]byte, 3333)); err != nil {
		t.Fatalf("read: %v", err)
	}
	if got, want := h.Sum(nil), sha256.Sum256(plain); !bytes.Equal(got, want[:]) {
		t.Fatal("unsealed bytes differ from the plaintext")
	}
}

// Seal does not close its destination.
func TestSealLeavesDestinationOpen(t *testing.T) {
	k := keyring(t, "k1", "k1")
	dst := &closeRecorder{}
	w, _, err := backupstore.Seal(dst, k)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if dst.closed || dst.Len() == 0 {
		t.Fatalf("after Close: dst closed=%v, %d bytes; want open with the age header and final chunk", dst.closed, dst.Len())
	}
	if got, err := unseal(dst.Bytes(), k, "k1"); err != nil || len(got) != 0 {
		t.Fatalf("empty stream unsealed to %d bytes, %v", len(got), err)
	}
}

type closeRecorder struct {
	bytes.Buffer
	closed bool
}

func (c *closeRecorder) Close() error { c.closed = true; return nil }

// Flipping any byte of a sealed stream — header, body, final chunk — is
// ErrCorrupt (from Unseal or from a read), and so are truncation and
// appended bytes.
func TestUnsealCorrupt(t *testing.T) {
	k := keyring(t, "k1", "k1")
	// Two 64 KiB chunks: a full one and the last, short one.
	plain, _ := io.ReadAll(io.LimitReader(rand.NewChaCha8([32]byte{2}), 70<<10))
	sealed, id := seal(t, k, plain)
	hdrEnd := bytes.Index(sealed, []byte("\n---"))
	hdrEnd += bytes.IndexByte(sealed[hdrEnd+1:], '\n') + 2
	if hdrEnd < 50 || hdrEnd > 300 {
		t.Fatalf("age header of %d bytes?", hdrEnd)
	}
	// Every byte of the header, of the nonce and first and last bytes of
	// each chunk, and a few at random.
	const nonce, chunk = 16, 64<<10 + 16
	var offsets []int
	for i := range sealed {
		body := i - hdrEnd
		if body < nonce+64 || (body-nonce)%chunk < 32 || (body-nonce)%chunk >= chunk-32 || i >= len(sealed)-64 {
			offsets = append(offsets, i)
		}
	}
	rng := rand.New(rand.NewPCG(1, 2))
	for range 40 {
		offsets = append(offsets, hdrEnd+rng.IntN(len(sealed)-hdrEnd))
	}
	for _, off := range offsets {
		bad := bytes.Clone(sealed)
		bad[off] ^= 1 << rng.IntN(8)
		if _, err := unseal(bad, k, id); !errors.Is(err, backupstore.ErrCorrupt) {
			t.Fatalf("byte %d of %d flipped: %v, want ErrCorrupt", off, len(sealed), err)
		}
	}
	t.Logf("%d single-bit flips, each ErrCorrupt", len(offsets))
	for name, bad := range map[string][]byte{
		"truncated by one":     sealed[:len(sealed)-1],
		"truncated at a chunk": sealed[:hdrEnd+nonce+chunk],
		"header only":          sealed[:100],
		"empty":                nil,
		"byte appended":        append(bytes.Clone(sealed), 0),
		"plaintext":            plain,
	} {
		if _, err := unseal(bad, k, id); !errors.Is(err, backupstore.ErrCorrupt) {
			t.Errorf("%s: %v, want ErrCorrupt", name, err)
		}
	}
}

// An I/O error of the source is that error, not corruption.
func TestUnsealSourceError(t *testing.T) {
	k := keyring(t, "k1", "k1")
	sealed, id := seal(t, k, bytes.Repeat([]byte("x"), 300<<10))
	errNet := errors.New("connection reset")
	for _, at := range []int{10, 100 << 10} {
		src := io.MultiReader(bytes.NewReader(sealed[:at]), iotest.ErrReader(errNet))
		r, err := backupstore.Unseal(src, k, id)
		if err == nil {
			_, err = io.ReadAll(r)
		}
		if !errors.Is(err, errNet) || errors.Is(err, backupstore.ErrCorrupt) {
			t.Errorf("source failing at %d: %v; want the source's error, not ErrCorrupt", at, err)
		}
	}
}

// Keys rotate: a keyring with a new Current and the old key still listed
// opens old backups, seals new ones with the new key; the wrong key is
// ErrCorrupt; a removed key is ErrUnknownKey.
func TestKeyRotation(t *testing.T) {
	old := keyring(t, "2026-11", "2026-11")
	oldSealed, oldID := seal(t, old, []byte("sealed in november"))

	rotated := backupstore.Keyring{Current: "2026-12", Keys: map[string]string{"2026-11": old.Keys["2026-11"], "2026-12": genKey(t)}}
	newSealed, newID := seal(t, rotated, []byte("sealed in december"))
	if oldID != "2026-11" || newID != "2026-12" {
		t.Fatalf("key ids %q, %q; want 2026-11 then 2026-12", oldID, newID)
	}
	if got, err := unseal(oldSealed, rotated, oldID); err != nil || string(got) != "sealed in november" {
		t.Fatalf("old backup with the rotated keyring: %q, %v", got, err)
	}
	if got, err := unseal(newSealed, rotated, newID); err != nil || string(got) != "sealed in december" {
		t.Fatalf("new backup: %q, %v", got, err)
	}
	// The wrong id (another key of the ring): corrupt, not a plaintext.
	if _, err := unseal(oldSealed, rotated, newID); !errors.Is(err, backupstore.ErrCorrupt) {
		t.Fatalf("old backup, new key id: %v, want ErrCorrupt", err)
	}
	if _, err := unseal(newSealed, old, "2026-11"); !errors.Is(err, backupstore.ErrCorrupt) {
		t.Fatalf("new backup, old key: %v, want ErrCorrupt", err)
	}
	// The old key removed from the ring.
	dropped := backupstore.Keyring{Current: "2026-12", Keys: map[string]string{"2026-12": rotated.Keys["2026-12"]}}
	_, err := unseal(oldSealed, dropped, oldID)
	if !errors.Is(err, backupstore.ErrUnknownKey) || !strings.Contains(err.Error(), "2026-11") {
		t.Fatalf("removed key: %v, want ErrUnknownKey naming 2026-11", err)
	}
}

func TestKeyringValidate(t *testing.T) {
	good, other := genKey(t), genKey(t)
	// A key with one character changed: bech32's checksum refuses it.
	// (good[30] is a bech32 character, upper case: change it to another.)
	const alpha = "QPZRY9X8GF2TVDW0S3JN54KHCE6MUA7L"
	typo := good[:30] + string(alpha[(strings.IndexByte(alpha, good[30])+1)%len(alpha)]) + good[31:]
	if typo == good || len(typo) != len(good) {
		t.Fatalf("typo %q", typo)
	}
	for _, tc := range []struct {
		name string
		k    backupstore.Keyring
		want string // substring of the error; "" = valid
	}{
		{"valid", backupstore.Keyring{Current: "a", Keys: map[string]string{"a": good, "b": other}}, ""},
		{"no keys", backupstore.Keyring{Current: "a"}, "no keys"},
		{"no current", backupstore.Keyring{Keys: map[string]string{"a": good}}, `"current" is empty`},
		{"current missing", backupstore.Keyring{Current: "c", Keys: map[string]string{"a": good, "b": other}}, `current key "c" is not among the keys (a, b)`},
		{"typo in another key", backupstore.Keyring{Current: "a", Keys: map[string]string{"a": other, "b": typo}}, `key "b" is not an age X25519 secret key`},
		{"public key", backupstore.Keyring{Current: "a", Keys: map[string]string{"a": "age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p"}}, `key "a" is not`},
		{"truncated", backupstore.Keyring{Current: "a", Keys: map[string]string{"a": good[:40]}}, `key "a" is not`},
		{"lowercase", backupstore.Keyring{Current: "a", Keys: map[string]string{"a": strings.ToLower(good) + "x"}}, `key "a" is not`},
		{"bad id", backupstore.Keyring{Current: "a", Keys: map[string]string{"a": good, "b c": other}}, `key id "b c"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.k.Validate()
			if tc.want == "" {
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Validate = %v, want an error containing %q", err, tc.want)
			}
			assertNoKey(t, err.Error(), tc.k)
			if _, _, err := backupstore.Seal(io.Discard, tc.k); err == nil {
				t.Fatal("Seal with an invalid keyring: no error")
			} else {
				assertNoKey(t, err.Error(), tc.k)
			}
		})
	}
}

// assertNoKey fails if s holds any key of k, or 12 characters of one.
func assertNoKey(t *testing.T, s string, k backupstore.Keyring) {
	t.Helper()
	for id, key := range k.Keys {
		body := strings.TrimPrefix(strings.ToUpper(key), "AGE-SECRET-KEY-1")
		for i := 0; i+12 <= len(body); i += 6 {
			if strings.Contains(strings.ToUpper(s), body[i:i+12]) {
				t.Fatalf("%q shows part of key %q", s, id)
			}
		}
	}
}

// fmt and slog show key ids only; JSON round-trips the keys (config file).
func TestKeyringNeverPrinted(t *testing.T) {
	k := keyring(t, "k2", "k1", "k2")
	var logged bytes.Buffer
	slog.New(slog.NewJSONHandler(&logged, nil)).Info("keys", "keyring", k, "ptr", &k)
	slog.New(slog.NewTextHandler(&logged, nil)).Info("keys", "keyring", k)
	for _, s := range []string{
		fmt.Sprint(k), fmt.Sprintf("%v %+v %#v %s", k, k, k, k), fmt.Sprintf("%v %+v", &k, &k),
		fmt.Sprintf("%+v", struct{ K backupstore.Keyring }{k}), logged.String(),
	} {
		assertNoKey(t, s, k)
		if !strings.Contains(s, "k1") || !strings.Contains(s, "k2") {
			t.Fatalf("%q: want the key ids", s)
		}
	}
	b, err := json.Marshal(k)
	if err != nil {
		t.Fatal(err)
	}
	var back backupstore.Keyring
	if err := json.Unmarshal(b, &back); err != nil || back.Current != "k2" || back.Keys["k1"] != k.Keys["k1"] || back.Keys["k2"] != k.Keys["k2"] {
		t.Fatalf("JSON round trip: %v, %v", back, err)
	}
	if !strings.Contains(string(b), `"current":"k2"`) {
		t.Fatalf("JSON form %s: want snake_case fields", b)
	}
}
