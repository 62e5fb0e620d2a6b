package backupstore_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"

	"github.com/cacheplane/cacheplane/backupstore"
	"github.com/cacheplane/cacheplane/backupstore/storetest"
	"github.com/cacheplane/cacheplane/internal/testutil"
)

// weedServer is a real SeaweedFS (master, volume, filer and S3 gateway in
// one `weed server` process) on loopback, with one S3 identity.
type weedServer struct {
	endpoint  string
	accessKey string
	secretKey string
	admin     *minio.Client // the test's own client, to look behind the store
}

// weedBinary finds SeaweedFS's weed: $CACHEPLANE_WEED, else
// <repo>/.dev/bin/weed (built by `make deps`).
func weedBinary(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("CACHEPLANE_WEED"); p != "" {
		if _, err := os.Stat(p); err != nil {
			t.Fatalf("CACHEPLANE_WEED=%s: %v (run make deps, or unset it to use .dev/bin/weed)", p, err)
		}
		return p
	}
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			break
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("no go.mod above the test's directory")
		}
		dir = parent
	}
	p := filepath.Join(dir, ".dev", "bin", "weed")
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("SeaweedFS's weed binary is missing at %s: run make deps (scripts/seaweedfs.sh builds it) or set CACHEPLANE_WEED", p)
	}
	return p
}

// startWeed starts `weed server` with every port free on 127.0.0.1 and
// waits until its S3 gateway answers with the configured credentials; the
// process group is killed at cleanup.
func startWeed(t *testing.T) *weedServer {
	t.Helper()
	bin := weedBinary(t)
	dir := t.TempDir()
	w := &weedServer{accessKey: "cacheplane-test", secretKey: randHex(t, 20)}
	// One identity with every permission: the store uses real signed
	// requests, not anonymous access.
	s3cfg := map[string]any{"identities": []map[string]any{{
		"name":        "cacheplane",
		"credentials": []map[string]string{{"accessKey": w.accessKey, "secretKey": w.secretKey}},
		"actions":     []string{"Admin", "Read", "List", "Tagging", "Write"},
	}}}
	b, _ := json.Marshal(s3cfg)
	cfgPath := filepath.Join(dir, "s3.json")
	if err := os.WriteFile(cfgPath, b, 0o600); err != nil {
		t.Fatal(err)
	}
	port := func() string { return strconv.Itoa(testutil.FreePort(t, "127.0.0.1")) }
	// weed puts a gRPC socket per service at a fixed place,
	// /tmp/seaweedfs-<service>-grpc-<port>.sock, and leaves some behind.
	var sockets []string
	grpcPort := func(service string) string {
		p := port()
		sockets = append(sockets, fmt.Sprintf("/tmp/seaweedfs-%s-grpc-%s.sock", service, p))
		return p
	}
	s3Port := port()
	w.endpoint = "127.0.0.1:" + s3Port
	dataDir := filepath.Join(dir, "data")
	if err := os.Mkdir(dataDir, 0o700); err != nil {
		t.Fatal(err)
	}
	// Every port and socket of the services `weed server -s3` starts is
	// ours (parallel runs must not collide); Iceberg and Lance, on by
	// default beside S3, are off.
	args := []string{"server",
		"-dir=" + dataDir,
		"-ip=127.0.0.1", "-ip.bind=127.0.0.1",
		"-master.port=" + port(), "-master.port.grpc=" + grpcPort("master"),
		"-volume.port=" + port(), "-volume.port.grpc=" + grpcPort("volume"),
		"-filer.port=" + port(), "-filer.port.grpc=" + grpcPort("filer"),
		"-filer.localSocket=" + filepath.Join(dir, "filer.sock"),
		"-s3", "-s3.port=" + s3Port, "-s3.port.grpc=" + grpcPort("s3"),
		"-s3.localSocket=" + filepath.Join(dir, "s3.sock"),
		"-s3.port.iceberg=0", "-s3.port.lance=0",
		"-s3.config=" + cfgPath,
		// Each bucket is a collection with volumes of its own: small
		// volumes, as many as the disk holds.
		"-master.volumeSizeLimitMB=64", "-volume.max=0",
		"-volume.preStopSeconds=0",
	}
	logPath := filepath.Join(dir, "weed.log")
	logf, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, args...)
	cmd.Dir = dir
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start weed: %v", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait(); logf.Close() }()
	t.Cleanup(func() {
		// A throwaway server: SIGKILL (weed's graceful stop on SIGTERM
		// took over 10 s here), then wait for the exit.
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-exited
		for _, s := range sockets {
			_ = os.Remove(s)
		}
		if t.Failed() {
			dumpLog(t, logPath)
		}
	})
	admin, err := minio.New(w.endpoint, &minio.Options{Creds: credentials.NewStaticV4(w.accessKey, w.secretKey, ""), BucketLookup: minio.BucketLookupPath})
	if err != nil {
		t.Fatal(err)
	}
	w.admin = admin
	start := time.Now()
	err = testutil.Poll(2*time.Minute, func() error {
		select {
		case err := <-exited:
			exited <- err
			return fmt.Errorf("weed exited: %v", err)
		default:
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_, err := admin.ListBuckets(ctx)
		return err
	})
	if err != nil {
		dumpLog(t, logPath)
		t.Fatalf("SeaweedFS's S3 gateway on %s did not answer: %v", w.endpoint, err)
	}
	t.Logf("SeaweedFS S3 on %s answered after %s", w.endpoint, time.Since(start).Round(100*time.Millisecond))
	return w
}

func dumpLog(t *testing.T, path string) {
	b, err := os.ReadFile(path)
	if err != nil {
		return
	}
	if len(b) > 8000 {
		b = b[len(b)-8000:]
	}
	t.Logf("weed log (tail):\n%s", b)
}

func randHex(t *testing.T, n int) string {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

var bucketSeq atomic.Int64

// newBucketStore returns an S3 store in a new bucket (NewS3 creates it),
// emptied and removed at cleanup.
func (w *weedServer) newBucketStore(t *testing.T, partSize int64) *backupstore.S3 {
	t.Helper()
	bucket := fmt.Sprintf("t%d-%s", bucketSeq.Add(1), randHex(t, 4))
	s, err := backupstore.NewS3(w.config(bucket, partSize))
	if err != nil {
		t.Fatalf("NewS3: %v", err)
	}
	t.Cleanup(func() { w.removeBucket(t, bucket) })
	return s
}

func (w *weedServer) config(bucket string, partSize int64) backupstore.Config {
	return backupstore.Config{Kind: "s3", Endpoint: w.endpoint, Bucket: bucket,
		AccessKey: w.accessKey, SecretKey: backupstore.Secret(w.secretKey), PartSize: partSize}
}

func (w *weedServer) removeBucket(t *testing.T, bucket string) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for o := range w.admin.ListObjectsIter(ctx, bucket, minio.ListObjectsOptions{Recursive: true}) {
		if o.Err != nil {
			t.Errorf("cleanup: list %s: %v", bucket, o.Err)
			return
		}
		if err := w.admin.RemoveObject(ctx, bucket, o.Key, minio.RemoveObjectOptions{}); err != nil {
			t.Errorf("cleanup: remove %s/%s: %v", bucket, o.Key, err)
		}
	}
	if err := w.admin.RemoveBucket(ctx, bucket); err != nil {
		t.Errorf("cleanup: remove bucket %s: %v", bucket, err)
	}
}

// TestS3Conformance runs the store suite against a real SeaweedFS S3
// gateway, with 5 MiB parts so storetest's 12 MiB objects are three-part
// uploads.
func TestS3Conformance(t *testing.T) {
	w := startWeed(t)
	start := time.Now()
	storetest.Run(t, func(t *testing.T) backupstore.Store {
		return w.newBucketStore(t, backupstore.MinPartSize)
	})
	t.Logf("conformance suite against SeaweedFS: %s", time.Since(start).Round(100*time.Millisecond))

	t.Run("Multipart", func(t *testing.T) {
		// The 12 MiB object went up as three parts: S3's ETag of a
		// multipart object ends with -<parts>.
		s := w.newBucketStore(t, backupstore.MinPartSize)
		ctx := t.Context()
		src := bytes.Repeat([]byte("0123456789abcdef"), storetest.LargeSize/16)
		if n, err := s.Put(ctx, "mp/obj", bytes.NewReader(src)); err != nil || n != storetest.LargeSize {
			t.Fatalf("Put = %d, %v", n, err)
		}
		info, err := w.admin.StatObject(ctx, bucketOf(s), "mp/obj", minio.StatObjectOptions{})
		if err != nil {
			t.Fatalf("stat: %v", err)
		}
		if !strings.HasSuffix(strings.Trim(info.ETag, `"`), "-3") {
			t.Fatalf("ETag %s: want a three-part upload (-3)", info.ETag)
		}
	})

	t.Run("BucketExists", func(t *testing.T) {
		s := w.newBucketStore(t, 0)
		ctx := t.Context()
		if _, err := s.Put(ctx, "k", strings.NewReader("v")); err != nil {
			t.Fatal(err)
		}
		again, err := backupstore.Open(w.config(bucketOf(s), 0))
		if err != nil {
			t.Fatalf("Open on an existing bucket: %v", err)
		}
		if got := again.String(); got != "s3 http://"+w.endpoint+"/"+bucketOf(s) {
			t.Fatalf("String() = %q", got)
		}
		if s.PartSize() != backupstore.DefaultPartSize {
			t.Fatalf("PartSize() = %d, want the default %d", s.PartSize(), backupstore.DefaultPartSize)
		}
		objs, err := again.List(ctx, "")
		if err != nil || len(objs) != 1 || objs[0].Key != "k" {
			t.Fatalf("List = %+v, %v", objs, err)
		}
	})

	t.Run("WrongCredentials", func(t *testing.T) {
		c := w.config("wrong-creds", 0)
		c.SecretKey = "not-the-secret-" + backupstore.Secret(randHex(t, 8))
		_, err := backupstore.NewS3(c)
		if err == nil {
			t.Fatal("NewS3 with a wrong secret key: no error")
		}
		if strings.Contains(err.Error(), c.SecretKey.Reveal()) || strings.Contains(err.Error(), w.secretKey) {
			t.Fatalf("error shows the secret: %v", err)
		}
		t.Logf("wrong secret: %v", err)
	})

	t.Run("GetUnderCtx", func(t *testing.T) {
		// Cancelling the ctx of a Get ends its stream.
		s := w.newBucketStore(t, 0)
		if _, err := s.Put(t.Context(), "k", bytes.NewReader(make([]byte, 8<<20))); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(t.Context())
		rc, err := s.Get(ctx, "k")
		if err != nil {
			t.Fatal(err)
		}
		defer rc.Close()
		if _, err := io.ReadFull(rc, make([]byte, 1<<10)); err != nil {
			t.Fatal(err)
		}
		cancel()
		if _, err := io.Copy(io.Discard, rc); err == nil {
			t.Fatal("read after cancel: no error")
		}
	})
}

// NewS3 against a port nobody listens on fails within its bound, naming
// the endpoint, not the secret.
func TestS3Unreachable(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	c := backupstore.Config{Kind: "s3", Endpoint: addr, Bucket: "backups", AccessKey: "ak", SecretKey: secret}
	_, err = backupstore.NewS3(c)
	if err == nil || !strings.Contains(err.Error(), addr) || strings.Contains(err.Error(), secret) {
		t.Fatalf("NewS3 to a closed port: %v; want an error naming %s without the secret", err, addr)
	}
}

func bucketOf(s *backupstore.S3) string {
	u := strings.TrimPrefix(s.String(), "s3 ")
	return u[strings.LastIndexByte(u, '/')+1:]
}
