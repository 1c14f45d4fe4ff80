package storage

import (
	"context"
	"fmt"
	"io"
	"strings"

	"github.com/minio/minio-go/v7"
)

// WholeSampleMax is the largest listed size for which SampleObject reads an
// object whole rather than asking for a range. Some servers pay far more
// for a range than for the bytes it saves: versitygw 1.8 allocates a 1 MiB
// read buffer for every ranged GET but streams a whole object straight
// from its file, so a ranged GET of a 20 KB object cost it 1.2 ms of CPU
// against 0.36 ms for the whole object (measured on the test bed; MinIO
// costs the same either way). Up to 64 KiB the extra bytes are cheaper than
// the range.
const WholeSampleMax = 64 << 10

// sample reads the first n bytes of an object version with its metadata, in
// one GET: ranged, or of the whole object when whole is set.
func (s *S3Store) sample(ctx context.Context, key, versionID string, n int64, whole bool) (Sample, error) {
	full, err := s.key(key)
	if err != nil {
		return Sample{}, s.fail("get", key, err)
	}
	opts := minio.GetObjectOptions{VersionID: versionID}
	if n > 0 && !whole {
		opts.SetRange(0, n-1)
	}
	rc, oi, hdr, err := s.core.GetObject(ctx, s.bucket, full, opts)
	if err != nil {
		// An empty object cannot satisfy a range: read it whole.
		if minio.ToErrorResponse(err).Code == "InvalidRange" {
			opts = minio.GetObjectOptions{VersionID: versionID}
			rc, oi, hdr, err = s.core.GetObject(ctx, s.bucket, full, opts)
		}
		if err != nil {
			return Sample{}, s.fail("get", key, err)
		}
	}
	defer rc.Close()
	// One buffer of the size asked: io.ReadAll would grow one by doubling,
	// the largest share of an audit's allocations.
	head, err := readHead(rc, n)
	if err != nil {
		return Sample{}, s.fail("get", key, err)
	}
	if whole {
		// Drain what is left so that the connection goes back to the pool.
		// An object that grew past the bound since it was listed is cut
		// off instead: closing early costs a connection, not correctness.
		if _, err := io.Copy(io.Discard, io.LimitReader(rc, WholeSampleMax)); err != nil {
			return Sample{}, s.fail("get", key, err)
		}
	}
	size := oi.Size
	// A ranged answer carries the total size in Content-Range.
	if cr := hdr.Get("Content-Range"); cr != "" {
		if i := strings.LastIndexByte(cr, '/'); i >= 0 {
			fmt.Sscan(cr[i+1:], &size)
		}
	}
	smp := Sample{
		Info:      ObjectInfo{Key: key, Size: size, ModTime: oi.LastModified, ETag: oi.ETag},
		VersionID: versionID,
		Head:      head,
		Metadata:  map[string]string{},
		SSE:       hdr.Get("x-amz-server-side-encryption"),
	}
	for k, v := range hdr {
		if lk := strings.ToLower(k); strings.HasPrefix(lk, "x-amz-meta-") && len(v) > 0 {
			smp.Metadata[strings.TrimPrefix(lk, "x-amz-meta-")] = v[0]
		}
	}
	if c := hdr.Get("x-amz-tagging-count"); c != "" && c != "0" {
		t, err := s.client.GetObjectTagging(ctx, s.bucket, full, minio.GetObjectTaggingOptions{VersionID: versionID})
		if err != nil {
			return Sample{}, s.fail("get tags", key, err)
		}
		smp.Tags = t.ToMap()
	}
	return smp, nil
}

// readHead reads up to n bytes, fewer only when r ends (io.EOF). Any other
// error, io.ErrUnexpectedEOF from a body cut short included, is returned:
// io.ReadFull would hide that one as a short object.
func readHead(r io.Reader, n int64) ([]byte, error) {
	head := make([]byte, max(n, 0))
	k := 0
	for k < len(head) {
		m, err := r.Read(head[k:])
		k += m
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, err
		}
	}
	return head[:k], nil
}
