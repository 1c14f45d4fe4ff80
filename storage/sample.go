package storage

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"iter"
	"strings"

	"github.com/minio/minio-go/v7"
)

// Sample is the head of one object version with what the store keeps beside
// it: what an auditor reads without any key.
type Sample struct {
	Info      ObjectInfo
	VersionID string // "" for unversioned stores or the latest version
	Head      []byte // the first bytes of the object, at most the length asked
	// Metadata is the object's user metadata (x-amz-meta-*), names in
	// lower case. Tags are its tags. Both are nil for folder stores.
	Metadata map[string]string
	Tags     map[string]string
	// SSE is the server-side encryption the server claims for the object
	// ("" for none). It is reported, never taken as evidence.
	SSE string
}

// Sampler is implemented by stores that can read an object's head together
// with its metadata in one request.
type Sampler interface {
	// SampleObject reads at most n bytes from the start of the object (of
	// the given version, or the latest when versionID is ""), with its
	// metadata. listed is the size a listing reported (-1 when unknown): a
	// store may pick a cheaper request with it, but the head always comes
	// from the object's own bytes and Info.Size is the size the store
	// reports now (the object may have changed since it was listed). It
	// returns an error wrapping ErrNotExist when there is no such object.
	SampleObject(ctx context.Context, key, versionID string, n, listed int64) (Sample, error)
}

// ObjectVersion is one version of an object, or a delete marker.
type ObjectVersion struct {
	ObjectInfo
	VersionID    string
	IsLatest     bool
	DeleteMarker bool
}

// VersionLister is implemented by stores that keep object versions.
type VersionLister interface {
	// ListVersions yields every version and delete marker of every object
	// whose key starts with prefix, following pagination to the end.
	ListVersions(ctx context.Context, prefix string) iter.Seq2[ObjectVersion, error]
}

var (
	_ Sampler       = (*S3Store)(nil)
	_ Sampler       = (*LocalStore)(nil)
	_ VersionLister = (*S3Store)(nil)
)

// SampleObject implements Sampler; a folder reads a head at the same cost
// whatever the size.
func (s *LocalStore) SampleObject(ctx context.Context, key, versionID string, n, _ int64) (Sample, error) {
	if versionID != "" {
		return Sample{}, s.fail("get", key, withKind(ErrNotExist, errors.New("folder stores keep no versions")))
	}
	info, err := s.Stat(ctx, key)
	if err != nil {
		return Sample{}, err
	}
	rc, err := s.Get(ctx, key)
	if err != nil {
		return Sample{}, err
	}
	defer rc.Close()
	head, err := io.ReadAll(io.LimitReader(rc, n))
	if err != nil {
		return Sample{}, s.fail("get", key, err)
	}
	return Sample{Info: info, Head: head}, nil
}

// SampleObject implements Sampler: one GET returns the head, the user
// metadata and the tag count; tags are fetched only when there are some.
// Objects listed at up to WholeSampleMax bytes are read whole (the rest of
// the body drained so the connection is reused), others with a range.
func (s *S3Store) SampleObject(ctx context.Context, key, versionID string, n, listed int64) (Sample, error) {
	return s.sample(ctx, key, versionID, n, listed >= 0 && listed <= WholeSampleMax)
}

// ListVersions implements VersionLister.
func (s *S3Store) ListVersions(ctx context.Context, prefix string) iter.Seq2[ObjectVersion, error] {
	return func(yield func(ObjectVersion, error) bool) {
		for oi := range s.client.ListObjectsIter(ctx, s.bucket, minio.ListObjectsOptions{Prefix: s.prefix + prefix, Recursive: true, WithVersions: true}) {
			if oi.Err != nil {
				yield(ObjectVersion{}, s.fail("list versions", prefix, oi.Err))
				return
			}
			v := ObjectVersion{
				ObjectInfo:   ObjectInfo{Key: strings.TrimPrefix(oi.Key, s.prefix), Size: oi.Size, ModTime: oi.LastModified, ETag: oi.ETag},
				VersionID:    oi.VersionID,
				IsLatest:     oi.IsLatest,
				DeleteMarker: oi.IsDeleteMarker,
			}
			if !yield(v, nil) {
				return
			}
		}
		if err := ctx.Err(); err != nil {
			yield(ObjectVersion{}, s.fail("list versions", prefix, err))
		}
	}
}

// BucketFacts are the bucket-level settings an audit records.
type BucketFacts struct {
	Versioning string `json:"versioning"` // "enabled", "suspended", "off" or "unknown"
	ObjectLock string `json:"object_lock"`
	// PublicAccess is true when the bucket policy allows anonymous
	// principals ("*") anything at all.
	PublicAccess bool   `json:"public_access"`
	Policy       string `json:"policy,omitempty"` // "none", "present" or "unknown"
	Location     string `json:"location,omitempty"`
	Endpoint     string `json:"endpoint,omitempty"`
}

// BucketFacts reads the bucket's settings without changing anything.
func (s *S3Store) BucketFacts(ctx context.Context) (BucketFacts, error) {
	f := BucketFacts{Endpoint: s.Endpoint(), Versioning: "unknown", ObjectLock: "unknown", Policy: "unknown"}
	if v, err := s.client.GetBucketVersioning(ctx, s.bucket); err == nil {
		f.Versioning = "off"
		if v.Status != "" {
			f.Versioning = strings.ToLower(v.Status)
		}
	} else if errors.Is(classifyS3(err), ErrUnavailable) || errors.Is(classifyS3(err), ErrPermission) {
		return f, s.fail("get versioning", "", err)
	}
	enabled, _, _, _, err := s.client.GetObjectLockConfig(ctx, s.bucket)
	switch {
	case err == nil && enabled == "Enabled":
		f.ObjectLock = "enabled"
	case err == nil || strings.Contains(minio.ToErrorResponse(err).Code, "ObjectLockConfigurationNotFound"):
		f.ObjectLock = "off"
	}
	pol, err := s.client.GetBucketPolicy(ctx, s.bucket)
	switch {
	case err == nil && strings.TrimSpace(pol) == "":
		f.Policy = "none"
	case err == nil:
		f.Policy = "present"
		f.PublicAccess = policyIsPublic(pol)
	case strings.Contains(minio.ToErrorResponse(err).Code, "NoSuchBucketPolicy"):
		f.Policy = "none"
	}
	if loc, err := s.client.GetBucketLocation(ctx, s.bucket); err == nil {
		f.Location = loc
	}
	return f, nil
}

// policyIsPublic reports whether any Allow statement names the anonymous
// principal.
func policyIsPublic(doc string) bool {
	var p struct {
		Statement []struct {
			Effect    string
			Principal json.RawMessage
		}
	}
	if json.Unmarshal([]byte(doc), &p) != nil {
		return true // unreadable: assume the worst and let a human look
	}
	for _, st := range p.Statement {
		if !strings.EqualFold(st.Effect, "Allow") {
			continue
		}
		var any string
		if json.Unmarshal(st.Principal, &any) == nil && any == "*" {
			return true
		}
		var m map[string]json.RawMessage
		if json.Unmarshal(st.Principal, &m) == nil {
			for _, v := range m {
				var one string
				var many []string
				if (json.Unmarshal(v, &one) == nil && one == "*") || (json.Unmarshal(v, &many) == nil && contains(many, "*")) {
					return true
				}
			}
		}
	}
	return false
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
