package identity

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
)

// tokenPrefix starts every join token's text (its format's version).
const tokenPrefix = "cpj1"

// Token is a join token as the operator passes it on: its id, its secret
// (the FSM keeps only SecretHash of it) and the CA certificate's hash (so
// the newcomer trusts the coordinator it contacts first).
type Token struct {
	ID     string
	Secret string
	CAHash string // "sha256:<hex>"
}

// NewToken makes a token for a cluster whose CA hashes to caHash.
func NewToken(caHash string) (Token, error) {
	b := make([]byte, 6+24)
	if _, err := rand.Read(b); err != nil {
		return Token{}, fmt.Errorf("join token: %w", err)
	}
	return Token{ID: hex.EncodeToString(b[:6]), Secret: hex.EncodeToString(b[6:]), CAHash: caHash}, nil
}

// String is the token's text: cpj1.<id>.<secret>.<ca sha256 hex>.
func (t Token) String() string {
	return tokenPrefix + "." + t.ID + "." + t.Secret + "." + strings.TrimPrefix(t.CAHash, "sha256:")
}

// LogValue names the token by id only.
func (t Token) LogValue() any { return "join token " + t.ID }

// ParseToken reads a token's text.
func ParseToken(s string) (Token, error) {
	parts := strings.Split(strings.TrimSpace(s), ".")
	if len(parts) != 4 || parts[0] != tokenPrefix {
		return Token{}, errors.New("join token: not a cacheplane join token (want cpj1.<id>.<secret>.<ca hash>, from: cacheplane hosts-token)")
	}
	for i, want := range []int{12, 48, 64} {
		if len(parts[i+1]) != want || !isHex(parts[i+1]) {
			return Token{}, fmt.Errorf("join token: part %d is not %d hex digits (copy the whole token)", i+2, want)
		}
	}
	return Token{ID: parts[1], Secret: parts[2], CAHash: "sha256:" + parts[3]}, nil
}

// HashSecret is what the FSM keeps of a token's secret.
func HashSecret(secret string) string {
	sum := sha256.Sum256([]byte("cacheplane join token\x00" + secret))
	return hex.EncodeToString(sum[:])
}

func isHex(s string) bool {
	_, err := hex.DecodeString(s)
	return err == nil
}
