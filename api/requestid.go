package api

import (
	"crypto/rand"
	"encoding/hex"
)

// NewRequestID returns a random idempotency key.
func NewRequestID() string {
	b := make([]byte, 12)
	if _, err := rand.Read(b); err != nil {
		panic("crypto/rand: " + err.Error())
	}
	return hex.EncodeToString(b)
}
