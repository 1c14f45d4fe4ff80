package storage

import (
	"context"
	"errors"

	"github.com/minio/minio-go/v7"
)

// VersionDeleter is implemented by stores that keep object versions and
// can remove one of them for good.
type VersionDeleter interface {
	VersionLister
	// DeleteVersion removes the version (or delete marker) versionID of key
	// permanently; no delete marker takes its place. A version that is gone
	// already is not an error. A version the server refuses to remove, such
	// as one under object-lock retention or legal hold, is an error wrapping
	// ErrPermission or the server's refusal, naming the key.
	DeleteVersion(ctx context.Context, key, versionID string) error
}

var _ VersionDeleter = (*S3Store)(nil)

// DeleteVersion implements VersionDeleter.
func (s *S3Store) DeleteVersion(ctx context.Context, key, versionID string) error {
	full, err := s.key(key)
	if err != nil {
		return s.fail("delete version", key, err)
	}
	if versionID == "" {
		return s.fail("delete version", key, errors.New("no version id: the store does not keep versions of this object"))
	}
	err = s.client.RemoveObject(ctx, s.bucket, full, minio.RemoveObjectOptions{VersionID: versionID})
	if err != nil && !errors.Is(classifyS3(err), ErrNotExist) {
		return s.fail("delete version "+versionID, key, err)
	}
	return nil
}
