package cli

import (
	"context"
	"errors"
	"net"
	"net/http"
	"path/filepath"
	"testing"
	"time"

	"github.com/cacheplane/cacheplane/api"
	"github.com/cacheplane/cacheplane/dashboard"
)

func TestRequestUIToken(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "admin.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	var gotTTL time.Duration
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var req dashboard.TokenRequest
		if r.URL.Path != dashboard.TokenPath || api.Decode(r.Body, &req) != nil {
			http.Error(w, "bad", http.StatusBadRequest)
			return
		}
		gotTTL = time.Duration(req.TTL)
		if gotTTL > dashboard.MaxTTL {
			w.WriteHeader(http.StatusBadRequest)
			_, _ = w.Write([]byte(`{"error":"ttl too long","code":"invalid"}`))
			return
		}
		_, _ = w.Write([]byte(`{"token":"tok","expires":"2026-12-07T12:00:00Z","listen":"127.0.0.1:7480"}`))
	})}
	go func() { _ = srv.Serve(ln) }()
	defer srv.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	res, err := requestUIToken(ctx, sock, time.Hour)
	if err != nil || res.Token != "tok" || res.Listen != "127.0.0.1:7480" || gotTTL != time.Hour {
		t.Fatalf("res %+v, err %v, ttl sent %s", res, err, gotTTL)
	}
	if _, err := requestUIToken(ctx, sock, 30*24*time.Hour); !errors.Is(err, api.ErrInvalid) {
		t.Fatalf("refused ttl: %v, want ErrInvalid", err)
	}
	if _, err := requestUIToken(ctx, filepath.Join(t.TempDir(), "none.sock"), time.Hour); !errors.Is(err, api.ErrNoSocket) {
		t.Fatalf("no coordinator: %v, want ErrNoSocket", err)
	}
}
