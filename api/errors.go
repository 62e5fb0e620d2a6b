package api

import (
	"errors"
	"fmt"
	"net/http"
)

// Sentinel errors. Wrap them with context (fmt.Errorf("place %s: %w", id, err));
// HTTPStatus maps them to status codes in this one place.
var (
	ErrInvalid      = errors.New("invalid request")
	ErrNotFound     = errors.New("not found")
	ErrConflict     = errors.New("conflict")
	ErrPlanTooSmall = errors.New("plan too small")
	ErrNoCapacity   = errors.New("no capacity")
	ErrNotLeader    = errors.New("not the leader")
	ErrNoLeader     = errors.New("no leader")
	ErrUnauthorized = errors.New("unauthorized")
	// ErrForbidden: the caller's identity does not allow this (an agent
	// outside its own host, a used or expired join token, a revoked
	// certificate).
	ErrForbidden   = errors.New("forbidden")
	ErrUnreachable = errors.New("unreachable")
	// ErrCorrupt: a stored backup does not match its record (checksum)
	// or does not decrypt; nothing is sent or restored from it.
	ErrCorrupt = errors.New("backup corrupt")
)

// Error codes on the wire, one per sentinel.
var codes = []struct {
	err    error
	code   string
	status int
}{
	{ErrInvalid, "invalid", http.StatusBadRequest},
	{ErrNotFound, "not_found", http.StatusNotFound},
	{ErrConflict, "conflict", http.StatusConflict},
	{ErrPlanTooSmall, "plan_too_small", http.StatusUnprocessableEntity},
	{ErrNoCapacity, "no_capacity", http.StatusUnprocessableEntity},
	{ErrNotLeader, "not_leader", http.StatusServiceUnavailable},
	{ErrNoLeader, "no_leader", http.StatusServiceUnavailable},
	{ErrUnauthorized, "unauthorized", http.StatusUnauthorized},
	{ErrForbidden, "forbidden", http.StatusForbidden},
	{ErrUnreachable, "unreachable", http.StatusBadGateway},
	{ErrCorrupt, "corrupt", http.StatusUnprocessableEntity},
}

// HTTPStatus is the status code for err: the first sentinel it wraps decides.
func HTTPStatus(err error) int {
	for _, c := range codes {
		if errors.Is(err, c.err) {
			return c.status
		}
	}
	return http.StatusInternalServerError
}

// ErrorCode is the wire code for err, "internal" when it wraps no sentinel.
func ErrorCode(err error) string {
	for _, c := range codes {
		if errors.Is(err, c.err) {
			return c.code
		}
	}
	return "internal"
}

// ErrorBody is the JSON body of every non-2xx answer.
type ErrorBody struct {
	Error string `json:"error"`
	Code  string `json:"code"`
}

// RemoteError is an error answered by a server. It unwraps to the sentinel
// named by its code, so errors.Is works on both sides of the wire.
type RemoteError struct {
	Status  int
	Code    string
	Message string
}

func (e *RemoteError) Error() string { return e.Message }

// Unwrap returns the sentinel matching the code.
func (e *RemoteError) Unwrap() error {
	for _, c := range codes {
		if c.code == e.Code {
			return c.err
		}
	}
	return nil
}

// Invalidf returns an ErrInvalid with a message for the operator.
func Invalidf(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrInvalid, fmt.Sprintf(format, args...))
}

// Message strips the sentinel prefix so the operator reads one plain line.
func Message(err error) string {
	var re *RemoteError
	if errors.As(err, &re) {
		return re.Message
	}
	msg := err.Error()
	for _, c := range codes {
		p := c.err.Error() + ": "
		if len(msg) > len(p) && msg[:len(p)] == p {
			return msg[len(p):]
		}
	}
	return msg
}
