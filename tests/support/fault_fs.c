/* A test-only LD_PRELOAD shim: file-system faults at the libc call every writer goes through.

   Python's own file objects, Orbax's JSON items and tensorstore's C++ array writer all end in
   write/pwrite/writev (or open/mkdir/rename); this shim makes those calls fail with a chosen errno
   for paths under one directory, exactly as a full or read-only disk would answer them.

     JAXFORMER_FAULT_PATH    absolute directory prefix the faults apply to (unset: no faults)
     JAXFORMER_FAULT_ERRNO   errno to return (28 ENOSPC: writes fail; 30 EROFS, 13 EACCES: opening
                             for writing, creating, renaming and removing fail too)
     JAXFORMER_FAULT_AFTER   optional path: faults start once it exists (e.g. the first checkpoint)

   Built by tests/support/fault_fs.py (gcc), used by the CLI subprocess tests. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <unistd.h>

static int fault_errno(void) {
  const char *e = getenv("JAXFORMER_FAULT_ERRNO");
  return e ? atoi(e) : ENOSPC;
}

static int armed(void) {
  const char *after = getenv("JAXFORMER_FAULT_AFTER");
  return after == NULL || access(after, F_OK) == 0;
}

static int under_prefix(const char *path) {
  const char *prefix = getenv("JAXFORMER_FAULT_PATH");
  if (prefix == NULL || path == NULL || path[0] != '/') return 0;
  size_t n = strlen(prefix);
  return strncmp(path, prefix, n) == 0 && (path[n] == '\0' || path[n] == '/') && armed();
}

static int fd_under_prefix(int fd) {
  if (getenv("JAXFORMER_FAULT_PATH") == NULL) return 0;
  char link[64], path[4096];
  snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
  ssize_t n = readlink(link, path, sizeof path - 1);
  if (n < 0) return 0;
  path[n] = '\0';
  return under_prefix(path);
}

/* Opening, creating, renaming, removing: refused only for the "read-only" kinds. */
static int refuses_changes(void) {
  int e = fault_errno();
  return e == EROFS || e == EACCES || e == EPERM;
}

#define REAL(name) static __typeof__(&name) real_##name; if (!real_##name) real_##name = dlsym(RTLD_NEXT, #name)
#define FAIL(ret) do { errno = fault_errno(); return ret; } while (0)

ssize_t write(int fd, const void *buf, size_t count) {
  REAL(write);
  if (fd > 2 && fd_under_prefix(fd)) FAIL(-1);
  return real_write(fd, buf, count);
}
ssize_t pwrite(int fd, const void *buf, size_t count, off_t off) {
  REAL(pwrite);
  if (fd_under_prefix(fd)) FAIL(-1);
  return real_pwrite(fd, buf, count, off);
}
ssize_t pwrite64(int fd, const void *buf, size_t count, off_t off) {
  REAL(pwrite64);
  if (fd_under_prefix(fd)) FAIL(-1);
  return real_pwrite64(fd, buf, count, off);
}
ssize_t writev(int fd, const struct iovec *iov, int n) {
  REAL(writev);
  if (fd > 2 && fd_under_prefix(fd)) FAIL(-1);
  return real_writev(fd, iov, n);
}
ssize_t pwritev(int fd, const struct iovec *iov, int n, off_t off) {
  REAL(pwritev);
  if (fd_under_prefix(fd)) FAIL(-1);
  return real_pwritev(fd, iov, n, off);
}
int fallocate(int fd, int mode, off_t off, off_t len) {
  REAL(fallocate);
  if (fd_under_prefix(fd)) FAIL(-1);
  return real_fallocate(fd, mode, off, len);
}

static int writes(int flags) { return (flags & (O_WRONLY | O_RDWR | O_CREAT | O_TRUNC)) != 0; }

#define OPEN_LIKE(name, ...)                                              \
  int name(__VA_ARGS__, int flags, ...) {                                 \
    REAL(name);                                                           \
    mode_t mode = 0;                                                      \
    if (flags & (O_CREAT | O_TMPFILE)) {                                  \
      va_list ap; va_start(ap, flags); mode = va_arg(ap, mode_t); va_end(ap); \
    }                                                                     \
    if (refuses_changes() && writes(flags) && under_prefix(path)) FAIL(-1); \
    return OPEN_CALL;                                                     \
  }
#define OPEN_CALL real_open(path, flags, mode)
OPEN_LIKE(open, const char *path)
#undef OPEN_CALL
#define OPEN_CALL real_open64(path, flags, mode)
OPEN_LIKE(open64, const char *path)
#undef OPEN_CALL
#define OPEN_CALL real_openat(dirfd, path, flags, mode)
OPEN_LIKE(openat, int dirfd, const char *path)
#undef OPEN_CALL
#define OPEN_CALL real_openat64(dirfd, path, flags, mode)
OPEN_LIKE(openat64, int dirfd, const char *path)
#undef OPEN_CALL

int mkdir(const char *path, mode_t mode) {
  REAL(mkdir);
  if (refuses_changes() && under_prefix(path)) FAIL(-1);
  return real_mkdir(path, mode);
}
int mkdirat(int dirfd, const char *path, mode_t mode) {
  REAL(mkdirat);
  if (refuses_changes() && under_prefix(path)) FAIL(-1);
  return real_mkdirat(dirfd, path, mode);
}
int rename(const char *old, const char *new) {
  REAL(rename);
  if (refuses_changes() && (under_prefix(old) || under_prefix(new))) FAIL(-1);
  return real_rename(old, new);
}
int renameat(int olddir, const char *old, int newdir, const char *new) {
  REAL(renameat);
  if (refuses_changes() && (under_prefix(old) || under_prefix(new))) FAIL(-1);
  return real_renameat(olddir, old, newdir, new);
}
int unlink(const char *path) {
  REAL(unlink);
  if (refuses_changes() && under_prefix(path)) FAIL(-1);
  return real_unlink(path);
}
int rmdir(const char *path) {
  REAL(rmdir);
  if (refuses_changes() && under_prefix(path)) FAIL(-1);
  return real_rmdir(path);
}
