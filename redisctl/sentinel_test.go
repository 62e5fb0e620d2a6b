package redisctl

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"

	"github.com/redis/go-redis/v9"
)

func TestParsePeers(t *testing.T) {
	replica := []any{"name", "127.0.0.12:6380", "ip", "127.0.0.12", "port", "6380", "runid", "abc",
		"flags", "slave", "master-link-status", "ok", "slave-repl-offset", "100"}
	downReplica := []any{"ip", "127.0.0.14", "port", "6381", "flags", "s_down,slave,disconnected", "master-link-status", "err"}
	sentinel := map[any]any{"ip": "127.0.0.13", "port": "26379", "flags": "sentinel"}
	tests := []struct {
		name    string
		in      any
		want    []Peer
		wantErr string
	}{
		{name: "none", in: []any{}, want: []Peer{}},
		{name: "replicas (RESP2)", in: []any{replica, downReplica}, want: []Peer{
			{Addr: "127.0.0.12:6380", Flags: []string{"slave"}, LinkStatus: "ok"},
			{Addr: "127.0.0.14:6381", Flags: []string{"s_down", "slave", "disconnected"}, LinkStatus: "err"},
		}},
		{name: "sentinel (RESP3 map)", in: []any{sentinel}, want: []Peer{{Addr: "127.0.0.13:26379", Flags: []string{"sentinel"}}}},
		{name: "not a list", in: "OK", wantErr: "unexpected answer"},
		{name: "odd fields", in: []any{[]any{"ip"}}, wantErr: "odd field list"},
		{name: "no port", in: []any{[]any{"ip", "1.2.3.4"}}, wantErr: "bad address"},
		{name: "entry of another type", in: []any{int64(3)}, wantErr: "unexpected int64"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parsePeers(tc.in)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("got  %+v\nwant %+v", got, tc.want)
			}
		})
	}
	peers, _ := parsePeers([]any{replica, downReplica})
	if !Has(peers, "127.0.0.12:6380") || Has(peers, "127.0.0.14:6381") || Has(peers, "127.0.0.99:1") {
		t.Error("Has: want only the live replica")
	}
}

func TestClassifyAndFailoverError(t *testing.T) {
	nogood := classify(proto("NOGOODSLAVE No suitable replica to promote"))
	inprog := classify(proto("INPROG Failover already in progress"))
	other := classify(proto("ERR No such master with that name"))
	if !errors.Is(nogood, ErrNoGoodReplica) || nogood.Error() != "NOGOODSLAVE No suitable replica to promote" {
		t.Errorf("nogood = %v", nogood)
	}
	if !errors.Is(inprog, ErrFailoverInProgress) {
		t.Errorf("inprog = %v", inprog)
	}
	if errors.Is(other, ErrNoGoodReplica) || errors.Is(other, ErrFailoverInProgress) {
		t.Errorf("other classified: %v", other)
	}
	fe := &FailoverError{Name: "a", Answers: []error{
		fmt.Errorf("sentinel s1: %w", nogood), fmt.Errorf("sentinel s2: %w", other), fmt.Errorf("sentinel s3: %w", nogood)}}
	var err error = fmt.Errorf("ask: %w", fe)
	if !errors.Is(err, ErrNoGoodReplica) || errors.Is(err, ErrFailoverInProgress) {
		t.Errorf("errors.Is through FailoverError: %v", err)
	}
	var got *FailoverError
	if !errors.As(err, &got) || got.Count(ErrNoGoodReplica) != 2 {
		t.Errorf("Count(ErrNoGoodReplica) = %d, want 2", got.Count(ErrNoGoodReplica))
	}
	if want := "failover of a: sentinel s1: NOGOODSLAVE No suitable replica to promote; sentinel s2: ERR No such master with that name; sentinel s3: NOGOODSLAVE No suitable replica to promote"; fe.Error() != want {
		t.Errorf("Error() = %q", fe.Error())
	}
	if (&FailoverError{Name: "a"}).Error() != "failover of a: no sentinel to ask" {
		t.Error("empty FailoverError message")
	}
}

// proto makes the error go-redis returns for an error reply.
func proto(msg string) error {
	c := redis.NewCmd(context.Background())
	c.SetErr(redisError(msg))
	return c.Err()
}

type redisError string

func (e redisError) Error() string { return string(e) }
func (redisError) RedisError()     {}
