package storage

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"iter"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// LocalStore keeps objects as files under a root folder. Writes go to a
// temporary file in the destination folder, are synced, and are renamed
// into place, so a crash never leaves a partial object under its real name.
type LocalStore struct {
	root string // as the user wrote it, for messages
	abs  string // absolute, for file operations
}

var (
	_ Store       = (*LocalStore)(nil)
	_ RangeReader = (*LocalStore)(nil)
)

// tempPrefix marks files that are being written. List never yields them and
// keys may not use it, so a reader cannot mistake one for an object.
const tempPrefix = ".ehrport-tmp-"

// Folder and file modes: exports hold patient data, even if encrypted, so
// only the owner may read them.
const (
	localDirMode  = 0o700
	localFileMode = 0o600
)

// NewLocalStore returns a store rooted at dir. The folder is created on the
// first Put; a missing folder lists as empty.
func NewLocalStore(dir string) (*LocalStore, error) {
	if dir == "" {
		return nil, fmt.Errorf("%w: empty folder path", ErrBadRef)
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("%w: folder %q: %v", ErrBadRef, dir, err)
	}
	return &LocalStore{root: filepath.Clean(dir), abs: abs}, nil
}

// Location implements Store.
func (s *LocalStore) Location() string { return s.root }

// Root returns the absolute folder path.
func (s *LocalStore) Root() string { return s.abs }

func (s *LocalStore) fail(op, key string, err error) error {
	switch {
	case errors.Is(err, fs.ErrNotExist):
		err = withKind(ErrNotExist, err)
	case errors.Is(err, fs.ErrPermission):
		err = withKind(ErrPermission, err)
	}
	return &Error{Op: op, Location: s.root, Key: key, Err: err}
}

// path maps a key to a file path, refusing keys that could escape the root
// or collide with temporary files.
func (s *LocalStore) path(key string) (string, error) {
	if err := checkKey(key); err != nil {
		return "", err
	}
	for _, seg := range strings.Split(key, "/") {
		if seg == "." || seg == ".." || strings.HasPrefix(seg, tempPrefix) {
			return "", fmt.Errorf("%w: key %q has a reserved path segment %q", ErrBadRef, key, seg)
		}
	}
	return filepath.Join(s.abs, filepath.FromSlash(key)), nil
}

// Put implements Store.
func (s *LocalStore) Put(ctx context.Context, key string, r io.Reader, size int64, opts PutOptions) error {
	if size < 0 {
		return s.fail("put", key, fmt.Errorf("size must be known, got %d", size))
	}
	dst, err := s.path(key)
	if err != nil {
		return s.fail("put", key, err)
	}
	if err := os.MkdirAll(filepath.Dir(dst), localDirMode); err != nil {
		return s.fail("put", key, err)
	}
	tmp, err := os.CreateTemp(filepath.Dir(dst), tempPrefix+"*")
	if err != nil {
		return s.fail("put", key, err)
	}
	committed := false
	defer func() {
		if !committed {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	if err := tmp.Chmod(localFileMode); err != nil {
		return s.fail("put", key, err)
	}
	src := &exactReader{r: r, left: size}
	var w io.Writer = tmp
	var h hash.Hash
	// A Verified body fails its own last read unless it matches SHA256
	// (PutOptions), and io.Copy's error then removes the temporary file:
	// hashing it here too would check the same bytes a second time.
	if opts.SHA256 != nil && !opts.Verified {
		h = sha256.New()
		w = io.MultiWriter(tmp, h)
	}
	if _, err := io.Copy(w, ctxReader{ctx, src}); err != nil {
		return s.fail("put", key, err)
	}
	if err := src.checkExhausted(); err != nil {
		return s.fail("put", key, err)
	}
	if h != nil && !bytes.Equal(h.Sum(nil), opts.SHA256) {
		return s.fail("put", key, withKind(ErrIntegrity, errors.New("content does not match the expected SHA-256")))
	}
	if err := tmp.Sync(); err != nil {
		return s.fail("put", key, err)
	}
	if err := tmp.Close(); err != nil {
		return s.fail("put", key, err)
	}
	if err := ctx.Err(); err != nil {
		return s.fail("put", key, err)
	}
	if err := os.Rename(tmp.Name(), dst); err != nil {
		return s.fail("put", key, err)
	}
	committed = true
	// Sync the folder so the rename itself survives a crash.
	if d, err := os.Open(filepath.Dir(dst)); err == nil {
		d.Sync()
		d.Close()
	}
	return nil
}

// Get implements Store.
func (s *LocalStore) Get(ctx context.Context, key string) (io.ReadCloser, error) {
	p, err := s.path(key)
	if err != nil {
		return nil, s.fail("get", key, err)
	}
	f, err := os.Open(p)
	if err != nil {
		return nil, s.fail("get", key, err)
	}
	if fi, err := f.Stat(); err != nil || !fi.Mode().IsRegular() {
		f.Close()
		return nil, s.fail("get", key, withKind(ErrNotExist, errors.New("not a file")))
	}
	return &ctxFile{ctx: ctx, File: f}, nil
}

// GetRange implements RangeReader.
func (s *LocalStore) GetRange(ctx context.Context, key string, offset, length int64) (io.ReadCloser, error) {
	rc, err := s.Get(ctx, key)
	if err != nil {
		return nil, err
	}
	f := rc.(*ctxFile)
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, s.fail("get", key, err)
	}
	if offset < 0 || length < 0 || offset+length > fi.Size() {
		f.Close()
		return nil, s.fail("get", key, fmt.Errorf("range %d+%d is outside the object (%d bytes)", offset, length, fi.Size()))
	}
	if _, err := f.Seek(offset, io.SeekStart); err != nil {
		f.Close()
		return nil, s.fail("get", key, err)
	}
	return struct {
		io.Reader
		io.Closer
	}{io.LimitReader(f, length), f}, nil
}

// Stat implements Store.
func (s *LocalStore) Stat(ctx context.Context, key string) (ObjectInfo, error) {
	p, err := s.path(key)
	if err != nil {
		return ObjectInfo{}, s.fail("stat", key, err)
	}
	fi, err := os.Stat(p)
	if err != nil {
		return ObjectInfo{}, s.fail("stat", key, err)
	}
	if !fi.Mode().IsRegular() {
		return ObjectInfo{}, s.fail("stat", key, withKind(ErrNotExist, errors.New("not a file")))
	}
	return ObjectInfo{Key: key, Size: fi.Size(), ModTime: fi.ModTime()}, nil
}

// Delete implements Store.
func (s *LocalStore) Delete(ctx context.Context, key string) error {
	p, err := s.path(key)
	if err != nil {
		return s.fail("delete", key, err)
	}
	if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return s.fail("delete", key, err)
	}
	// Folders are an artefact of this store, not objects: drop the ones
	// this delete emptied, so an emptied export lists and looks empty.
	for dir := filepath.Dir(p); dir != s.abs && strings.HasPrefix(dir, s.abs); dir = filepath.Dir(dir) {
		if os.Remove(dir) != nil {
			break
		}
	}
	return nil
}

// List implements Store. It yields keys in ascending byte order, as S3 does:
// folder entries sort as "name/" so that "a-c" comes before "a/b".
func (s *LocalStore) List(ctx context.Context, prefix string) iter.Seq2[ObjectInfo, error] {
	return func(yield func(ObjectInfo, error) bool) {
		// Start at the deepest folder that the prefix fully names.
		dirKey := ""
		if i := strings.LastIndex(prefix, "/"); i >= 0 {
			dirKey = prefix[:i+1]
		}
		_, err := s.walk(ctx, dirKey, prefix, yield)
		if err != nil {
			yield(ObjectInfo{}, s.fail("list", prefix, err))
		}
	}
}

// walk lists folder dirKey (a key prefix ending in '/', or ""), yielding the
// objects whose keys start with prefix. It returns false when the consumer
// stopped.
func (s *LocalStore) walk(ctx context.Context, dirKey, prefix string, yield func(ObjectInfo, error) bool) (bool, error) {
	if err := ctx.Err(); err != nil {
		return false, err
	}
	entries, err := os.ReadDir(filepath.Join(s.abs, filepath.FromSlash(dirKey)))
	if errors.Is(err, fs.ErrNotExist) || errors.Is(err, fs.ErrInvalid) {
		return true, nil
	}
	if err != nil {
		// ENOTDIR: the prefix names a file's parent that is a file.
		var pe *fs.PathError
		if errors.As(err, &pe) && strings.Contains(pe.Err.Error(), "not a directory") {
			return true, nil
		}
		return false, err
	}
	type entry struct {
		sortKey string
		e       fs.DirEntry
	}
	list := make([]entry, 0, len(entries))
	for _, e := range entries {
		name := e.Name()
		if strings.HasPrefix(name, tempPrefix) {
			continue
		}
		k := dirKey + name
		if e.IsDir() {
			k += "/"
		}
		// Skip entries that can neither match nor contain matches.
		if !strings.HasPrefix(k, prefix) && !strings.HasPrefix(prefix, k) {
			continue
		}
		list = append(list, entry{k, e})
	}
	slices.SortFunc(list, func(a, b entry) int { return strings.Compare(a.sortKey, b.sortKey) })
	for _, it := range list {
		if it.e.IsDir() {
			more, err := s.walk(ctx, it.sortKey, prefix, yield)
			if err != nil || !more {
				return more, err
			}
			continue
		}
		if !it.e.Type().IsRegular() || !strings.HasPrefix(it.sortKey, prefix) {
			continue
		}
		fi, err := it.e.Info()
		if errors.Is(err, fs.ErrNotExist) {
			continue // deleted while listing
		}
		if err != nil {
			return false, err
		}
		if !yield(ObjectInfo{Key: it.sortKey, Size: fi.Size(), ModTime: fi.ModTime()}, nil) {
			return false, nil
		}
	}
	return true, nil
}

// ctxReader stops a copy when the context is cancelled.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

// ctxFile is an open object file whose reads stop when the context is
// cancelled.
type ctxFile struct {
	ctx context.Context
	*os.File
}

func (f *ctxFile) Read(p []byte) (int, error) {
	if err := f.ctx.Err(); err != nil {
		return 0, err
	}
	return f.File.Read(p)
}
