package storage

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/minio/minio-go/v7"
)

// ErrNotSupported: the store cannot do this operation for this object; the
// caller falls back to a plain rewrite.
var ErrNotSupported = errors.New("not supported by this store for this object")

// HeadReplacer is implemented by stores that can rewrite the start of an
// object while the server copies the rest, so a header change does not
// move the payload through the client.
type HeadReplacer interface {
	// ReplaceHead replaces the object key, of size bytes, with newHead
	// followed by the object's own bytes from keepFrom on, which the server
	// copies. Readers see the old object or the new one, never a mix. It
	// returns an error wrapping ErrNotSupported when the rest is too small
	// for a server-side copy to pay (the caller then rewrites the object).
	// The caller proves the result (ETags of copied parts are no proof).
	ReplaceHead(ctx context.Context, key string, size int64, newHead []byte, keepFrom int64) error
}

var _ HeadReplacer = (*S3Store)(nil)

// serverCopyPart bounds each server-side copied part (S3 allows 5 GiB).
const serverCopyPart = 1 << 30

// ReplaceHead implements HeadReplacer with a multipart upload: part 1 is the
// new head plus the first MinPartSize bytes of the kept range (every part
// but the last must be at least 5 MiB), the other parts are UploadPartCopy
// ranges of the object itself, read by the server before the upload
// completes and replaces it.
func (s *S3Store) ReplaceHead(ctx context.Context, key string, size int64, newHead []byte, keepFrom int64) (err error) {
	full, err := s.key(key)
	if err != nil {
		return s.fail("replace head", key, err)
	}
	rest := size - keepFrom
	if keepFrom < 0 || rest < 2*MinPartSize {
		return s.fail("replace head", key, fmt.Errorf("%w: %d bytes to keep is below %d", ErrNotSupported, rest, 2*MinPartSize))
	}
	uploadID, err := s.core.NewMultipartUpload(ctx, s.bucket, full, minio.PutObjectOptions{ContentType: "application/octet-stream"})
	if err != nil {
		return s.fail("replace head", key, err)
	}
	defer func() {
		if err != nil {
			actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
			defer cancel()
			_ = s.core.AbortMultipartUpload(actx, s.bucket, full, uploadID)
		}
	}()
	first, err := s.GetRange(ctx, key, keepFrom, MinPartSize)
	if err != nil {
		return err
	}
	firstBuf, err := io.ReadAll(first)
	first.Close()
	if err != nil {
		return s.fail("replace head", key, err)
	}
	part1 := append(append(make([]byte, 0, len(newHead)+len(firstBuf)), newHead...), firstBuf...)
	p, err := s.core.PutObjectPart(ctx, s.bucket, full, uploadID, 1, bytes.NewReader(part1), int64(len(part1)), minio.PutObjectPartOptions{})
	if err != nil {
		return s.fail("replace head", key, err)
	}
	parts := []minio.CompletePart{{PartNumber: 1, ETag: p.ETag}}
	for off, n := keepFrom+MinPartSize, 2; off < size; n++ {
		length := min(int64(serverCopyPart), size-off)
		cp, err := s.core.CopyObjectPart(ctx, s.bucket, full, s.bucket, full, uploadID, n, off, length, nil)
		if err != nil {
			return s.fail("replace head", key, err)
		}
		parts = append(parts, minio.CompletePart{PartNumber: n, ETag: cp.ETag})
		off += length
	}
	if _, err := s.core.CompleteMultipartUpload(ctx, s.bucket, full, uploadID, parts, minio.PutObjectOptions{}); err != nil {
		return s.fail("replace head", key, err)
	}
	return nil
}
