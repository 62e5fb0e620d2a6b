package backupstore

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
)

// bucketTimeout bounds NewS3's bucket check and creation (NewS3 has no ctx).
const bucketTimeout = 30 * time.Second

// S3 is a Store in an S3-compatible bucket (minio-go). Put streams the
// reader as a multipart upload of PartSize parts (one fixed buffer of that
// size), whatever the object's size: S3 makes the object visible only when
// the upload is completed, after the last part; any error before that (the
// reader fails, ctx is cancelled, a part is refused) makes minio-go abort
// the upload (with a detached one-minute deadline, so a cancelled ctx still
// aborts), and S3 discards its parts. Only a process killed mid-Put leaves
// an incomplete upload behind (see Incomplete; a bucket lifecycle rule
// AbortIncompleteMultipartUpload cleans those up). S3's 10,000 parts bound
// an object to 10,000 × PartSize (156 GiB with the default 16 MiB).
type S3 struct {
	client   *minio.Client
	bucket   string
	partSize int64
	name     string
}

// NewS3 connects to c's endpoint and creates c's bucket if it is missing.
func NewS3(c Config) (*S3, error) {
	if c.Kind == "" {
		c.Kind = KindS3
	}
	if c.Kind != KindS3 {
		return nil, fmt.Errorf("backupstore: NewS3 with kind %q", c.Kind)
	}
	if err := c.Validate(); err != nil {
		return nil, err
	}
	client, err := minio.New(c.Endpoint, &minio.Options{
		Creds:        credentials.NewStaticV4(c.AccessKey, c.SecretKey.Reveal(), ""),
		Secure:       c.Secure,
		Region:       c.Region,
		BucketLookup: minio.BucketLookupPath,
	})
	if err != nil {
		return nil, fmt.Errorf("backupstore: s3 %s: %w", s3URL(c), err)
	}
	s := &S3{client: client, bucket: c.Bucket, partSize: c.PartSize, name: "s3 " + s3URL(c)}
	if s.partSize == 0 {
		s.partSize = DefaultPartSize
	}
	ctx, cancel := context.WithTimeout(context.Background(), bucketTimeout)
	defer cancel()
	if err := s.ensureBucket(ctx); err != nil {
		return nil, fmt.Errorf("backupstore: %s: %w", s.name, err)
	}
	return s, nil
}

func s3URL(c Config) string {
	scheme := "http"
	if c.Secure {
		scheme = "https"
	}
	return scheme + "://" + c.Endpoint + "/" + c.Bucket
}

func (s *S3) ensureBucket(ctx context.Context) error {
	ok, err := s.client.BucketExists(ctx, s.bucket)
	if err != nil {
		return fmt.Errorf("check bucket: %w", err)
	}
	if ok {
		return nil
	}
	err = s.client.MakeBucket(ctx, s.bucket, minio.MakeBucketOptions{})
	switch minio.ToErrorResponse(err).Code {
	case minio.BucketAlreadyOwnedByYou, minio.BucketAlreadyExists:
		// Created meanwhile (another agent): check it is ours to use.
		if ok, err := s.client.BucketExists(ctx, s.bucket); err != nil || !ok {
			return fmt.Errorf("create bucket: %w", errors.Join(err, errors.New("bucket exists but is not accessible")))
		}
		return nil
	}
	if err != nil {
		return fmt.Errorf("create bucket: %w", err)
	}
	return nil
}

func (s *S3) String() string { return s.name }

// PartSize returns the multipart part size Put uses.
func (s *S3) PartSize() int64 { return s.partSize }

// Put implements Store.
func (s *S3) Put(ctx context.Context, key string, r io.Reader) (int64, error) {
	if err := ValidKey(key); err != nil {
		return 0, err
	}
	if err := ctx.Err(); err != nil {
		return 0, fmt.Errorf("backupstore: put %s: %w", key, err)
	}
	// Size -1: always a multipart upload, completed after the last part
	// (minio-go, putObjectMultipartStreamNoLength), aborted on any error.
	info, err := s.client.PutObject(ctx, s.bucket, key, r, -1, minio.PutObjectOptions{
		PartSize:    uint64(s.partSize),
		ContentType: "application/octet-stream",
	})
	if err != nil {
		return 0, fmt.Errorf("backupstore: put %s: %w", key, withCtxErr(ctx, err))
	}
	return info.Size, nil
}

// withCtxErr makes a cancelled or expired ctx visible to errors.Is, whatever
// error minio-go surfaced for it.
func withCtxErr(ctx context.Context, err error) error {
	if cerr := ctx.Err(); cerr != nil && !errors.Is(err, cerr) {
		return fmt.Errorf("%w (%v)", cerr, err)
	}
	return err
}

// s3Err maps S3's "no such key" to ErrNotFound.
func s3Err(ctx context.Context, err error) error {
	if minio.ToErrorResponse(err).Code == minio.NoSuchKey {
		return ErrNotFound
	}
	return withCtxErr(ctx, err)
}

// Get implements Store. The object is read under ctx: cancelling it ends
// the stream.
func (s *S3) Get(ctx context.Context, key string) (io.ReadCloser, error) {
	if err := ValidKey(key); err != nil {
		return nil, err
	}
	obj, err := s.client.GetObject(ctx, s.bucket, key, minio.GetObjectOptions{})
	if err != nil {
		return nil, fmt.Errorf("backupstore: get %s: %w", key, s3Err(ctx, err))
	}
	// GetObject is lazy: Stat sends the request, so a missing key is an
	// error here, not at the first Read.
	if _, err := obj.Stat(); err != nil {
		_ = obj.Close()
		return nil, fmt.Errorf("backupstore: get %s: %w", key, s3Err(ctx, err))
	}
	return obj, nil
}

// Stat implements Store.
func (s *S3) Stat(ctx context.Context, key string) (Object, error) {
	if err := ValidKey(key); err != nil {
		return Object{}, err
	}
	info, err := s.client.StatObject(ctx, s.bucket, key, minio.StatObjectOptions{})
	if err != nil {
		return Object{}, fmt.Errorf("backupstore: stat %s: %w", key, s3Err(ctx, err))
	}
	return Object{Key: info.Key, Size: info.Size, ModTime: info.LastModified}, nil
}

// List implements Store.
func (s *S3) List(ctx context.Context, prefix string) ([]Object, error) {
	ctx, cancel := context.WithCancel(ctx) // ends minio-go's lister on an early return
	defer cancel()
	objs := []Object{}
	for info := range s.client.ListObjectsIter(ctx, s.bucket, minio.ListObjectsOptions{Prefix: prefix, Recursive: true}) {
		if info.Err != nil {
			return nil, fmt.Errorf("backupstore: list %q: %w", prefix, withCtxErr(ctx, info.Err))
		}
		if strings.HasSuffix(info.Key, "/") {
			continue // a directory marker some servers list: no object of ours
		}
		objs = append(objs, Object{Key: info.Key, Size: info.Size, ModTime: info.LastModified})
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("backupstore: list %q: %w", prefix, err)
	}
	slices.SortFunc(objs, func(a, b Object) int { return strings.Compare(a.Key, b.Key) })
	return objs, nil
}

// Delete implements Store.
func (s *S3) Delete(ctx context.Context, key string) error {
	if err := ValidKey(key); err != nil {
		return err
	}
	err := s.client.RemoveObject(ctx, s.bucket, key, minio.RemoveObjectOptions{})
	if err != nil && !errors.Is(s3Err(ctx, err), ErrNotFound) {
		return fmt.Errorf("backupstore: delete %s: %w", key, withCtxErr(ctx, err))
	}
	return nil
}

// Incomplete lists the keys of multipart uploads started and neither
// completed nor aborted (a process killed mid-Put). They are invisible to
// Get, Stat and List but hold storage until aborted.
func (s *S3) Incomplete(ctx context.Context) ([]string, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var out []string
	for u := range s.client.ListIncompleteUploads(ctx, s.bucket, "", true) {
		if u.Err != nil {
			return nil, fmt.Errorf("backupstore: incomplete uploads: %w", withCtxErr(ctx, u.Err))
		}
		out = append(out, u.Key)
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("backupstore: incomplete uploads: %w", err)
	}
	return out, nil
}
