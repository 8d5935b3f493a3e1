#include "cli/pack_discover.h"

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/check.h"
#include "nifti_io.h"

static int is_file(const char *p)
{
    struct stat st;
    return stat(p, &st) == 0 && S_ISREG(st.st_mode);
}

static int is_dir(const char *p)
{
    struct stat st;
    return stat(p, &st) == 0 && S_ISDIR(st.st_mode);
}

/* First of DIR/STEM.nii.gz, DIR/STEM.nii that exists, into out. */
static int find_nifti(const char *dir, const char *stem, char *out, size_t n)
{
    static const char *const ext[] = {".nii.gz", ".nii"};
    for (int e = 0; e < 2; e++) {
        snprintf(out, n, "%s/%s%s", dir, stem, ext[e]);
        if (is_file(out)) return 1;
        struct stat st;
        if (lstat(out, &st) == 0 && S_ISLNK(st.st_mode) && stat(out, &st) != 0)
            alice_die("%s is a symbolic link to nothing (its target is gone): fix or remove the "
                      "link", out);   /* would pack the case unlabelled */
        if (stat(out, &st) == 0)   /* a folder (an archive unpacked in place), a device: ditto */
            alice_die("%s is not a regular file (%s): a NIfTI of that name must be one; move it "
                      "away or replace it by the file", out,
                      S_ISDIR(st.st_mode) ? "a folder" : "a special file");
    }
    out[0] = '\0';
    return 0;
}

static int by_name(const void *a, const void *b)
{
    return strcmp(((const PackInput *)a)->name, ((const PackInput *)b)->name);
}

static void finish(PackInput *v, int n, const char *source)
{
    qsort(v, (size_t)n, sizeof *v, by_name);
    for (int i = 1; i < n; i++)
        if (!strcmp(v[i].name, v[i - 1].name))
            alice_die("%s: two images give the case name '%s' (%s and %s); rename one", source,
                      v[i].name, v[i - 1].image, v[i].image);
}

/* The case name: the first len characters of the file name `file`; a name that does not fit
 * is refused, never cut (a cut name would find no label, or another case's). */
static void case_name(char name[DATASET_NAME_LEN], const char *file, size_t len)
{
    if (len >= DATASET_NAME_LEN)
        alice_die("%s: the case name would be %zu characters long, over the %d a data set "
                  "stores; rename the file", file, len, DATASET_NAME_LEN - 1);
    snprintf(name, DATASET_NAME_LEN, "%.*s", (int)len, file);
}

static void push(PackInput **v, int *n, int *cap, const char *name, const char *image, const char *label)
{
    if (*n == *cap) {
        *cap = *cap ? 2 * *cap : 64;
        *v = xrealloc(*v, sizeof **v * (size_t)*cap);
    }
    PackInput *p = &(*v)[(*n)++];
    if (strlen(name) >= sizeof p->name) alice_die("case name too long: %s", name);
    snprintf(p->name, sizeof p->name, "%s", name);
    if (strlen(image) >= sizeof p->image || strlen(label) >= sizeof p->label)
        alice_die("path too long (over %d characters): %s", DATASET_PATH_LEN - 1, image);
    snprintf(p->image, sizeof p->image, "%s", image);
    snprintf(p->label, sizeof p->label, "%s", label);
}

int pack_discover_dir(const char *dir_in, PackInput **out)
{
    char dir[DATASET_PATH_LEN];
    snprintf(dir, sizeof dir, "%s", dir_in);
    if (!is_dir(dir)) alice_die("--input %s: not a directory (give the folder holding the .nii.gz files)", dir);
    /* The FLARE/nnU-Net top folder: use its imagesTr/. */
    char sub[DATASET_PATH_LEN];
    if (snprintf(sub, sizeof sub, "%s/imagesTr", dir) < (int)sizeof sub && is_dir(sub))
        memcpy(dir, sub, sizeof dir);
    char sibling_labels[DATASET_PATH_LEN + 32];
    snprintf(sibling_labels, sizeof sibling_labels, "%s/../labelsTr", dir);

    DIR *d = opendir(dir);
    if (!d) alice_die("--input %s: cannot read the directory: %s", dir, strerror(errno));
    PackInput *v = NULL;
    int n = 0, cap = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        size_t stem = nifti_name_stem(e->d_name);
        if (!stem) continue;
        char name[DATASET_NAME_LEN], image[DATASET_PATH_LEN + 300], label[DATASET_PATH_LEN + 300] = "";
        snprintf(image, sizeof image, "%s/%s", dir, e->d_name);
        if (stem > 5 && !strncmp(e->d_name + stem - 5, "_0000", 5)) {          /* FLARE */
            case_name(name, e->d_name, stem - 5);
            if (!find_nifti(dir, name, label, sizeof label))
                find_nifti(sibling_labels, name, label, sizeof label);
        } else if (!strncmp(e->d_name, "img", 3)) {                           /* BTCV */
            case_name(name, e->d_name, stem);
            char lstem[DATASET_NAME_LEN + 8];
            snprintf(lstem, sizeof lstem, "label%s", name + 3);
            if (!find_nifti(dir, lstem, label, sizeof label)) {
                char labels_dir[DATASET_PATH_LEN + 32];
                snprintf(labels_dir, sizeof labels_dir, "%s/../labelsTr", dir);
                if (!find_nifti(labels_dir, lstem, label, sizeof label)) {
                    snprintf(labels_dir, sizeof labels_dir, "%s/../label", dir);
                    find_nifti(labels_dir, lstem, label, sizeof label);
                }
            }
        } else {
            continue;  /* labels and anything else */
        }
        push(&v, &n, &cap, name, image, label);
    }
    closedir(d);
    if (n == 0)
        alice_die("--input %s: no images found. Expected FLARE 2022 naming (NAME_0000.nii.gz, label "
                  "NAME.nii.gz beside it or in ../labelsTr/), BTCV naming (imgXXXX.nii.gz, label "
                  "labelXXXX.nii.gz), or use --list FILE with 'image [label]' lines", dir);
    finish(v, n, dir);
    *out = v;
    return n;
}

/* Whether [line, end) ends with suffix. */
static int range_ends_with(const char *line, const char *end, const char *suffix)
{
    const size_t n = strlen(suffix);
    return (size_t)(end - line) >= n && !strncmp(end - n, suffix, n);
}

/* Whether the '#' at p starts a comment: at the line's start or after a tab; after a space
 * too, except on a tab-separated line (tab_mode), whose paths may hold " #": there only where
 * a field has ended, the spaces before it following a tab, the line's start or a NIfTI name. */
static int starts_comment(const char *line, const char *p, int tab_mode)
{
    if (p == line || p[-1] == '\t') return 1;
    if (p[-1] != ' ') return 0;
    if (!tab_mode) return 1;
    const char *q = p;
    while (q > line && q[-1] == ' ') q--;
    return q == line || q[-1] == '\t' || range_ends_with(line, q, ".nii") ||
           range_ends_with(line, q, ".nii.gz");
}

/* The fields of one list-file line, in place (at most 3: a third means too many). '#' starts a
 * comment where starts_comment says (a path may hold one otherwise); blanks around the fields
 * go. A line that holds a tab before its comment splits at tabs only, so paths may hold spaces
 * (and " #"); otherwise at runs of spaces. */
static void trim_trailing_blanks(char *line)
{
    size_t len = strlen(line);
    while (len > 0 && (line[len - 1] == ' ' || line[len - 1] == '\t')) line[--len] = '\0';
}

static int split_list_line(char *line, char *fields[3])
{
    line[strcspn(line, "\r\n")] = '\0';
    trim_trailing_blanks(line);   /* a stray trailing tab does not make a tab-separated line */
    const int tab_mode = strchr(line, '\t') != NULL;
    for (char *p = line; *p; p++)
        if (*p == '#' && starts_comment(line, p, tab_mode)) {
            *p = '\0';
            break;
        }
    /* a tab before the comment (the one ending an unlabelled image's field too) */
    const char *seps = strchr(line, '\t') ? "\t" : " ";
    trim_trailing_blanks(line);
    int k = 0;
    for (char *p = line; k < 3;) {
        p += strspn(p, seps);
        p += strspn(p, " \t");   /* blanks around a field; empty fields vanish */
        if (!*p) break;
        char *end = p + strcspn(p, seps);
        const int last = !*end;
        *end = '\0';
        for (char *t = end - 1; t > p && *t == ' '; t--) *t = '\0';
        fields[k++] = p;
        if (last) break;
        p = end + 1;
    }
    return k;
}

int pack_discover_list(const char *list_file, PackInput **out)
{
    FILE *f = fopen(list_file, "r");
    if (!f) alice_die("--list %s: cannot open: %s", list_file, strerror(errno));
    char base[DATASET_PATH_LEN] = ".";
    const char *slash = strrchr(list_file, '/');
    if (slash) snprintf(base, sizeof base, "%.*s", (int)(slash - list_file), list_file);
    PackInput *v = NULL;
    int n = 0, cap = 0, line_no = 0;
    char line[4 * DATASET_PATH_LEN];
    while (fgets(line, sizeof line, f)) {
        line_no++;
        if (!strchr(line, '\n') && strlen(line) == sizeof line - 1) {
            const int next = fgetc(f);   /* a full buffer is a long line, or the last one */
            if (next != EOF)
                alice_die("%s:%d: line longer than %zu characters", list_file, line_no,
                          sizeof line - 2);
        }
        /* a UTF-8 byte-order mark (Windows editors) is not part of the first path */
        char *text = line_no == 1 && !strncmp(line, "\xEF\xBB\xBF", 3) ? line + 3 : line;
        char *field[3];
        const int k = split_list_line(text, field);
        if (k == 0) continue;
        if (k > 2)
            alice_die("%s:%d: expected 'image [label]', got more fields (for paths with spaces, "
                      "separate image and label with a tab)", list_file, line_no);
        const char *a = field[0], *b = k == 2 ? field[1] : "";
        char image[2 * DATASET_PATH_LEN + 2], label[2 * DATASET_PATH_LEN + 2] = "";
        /* Relative paths are relative to the list file; push refuses a path too long. */
        snprintf(image, sizeof image, "%s%s%s", a[0] == '/' ? "" : base, a[0] == '/' ? "" : "/", a);
        if (k == 2)
            snprintf(label, sizeof label, "%s%s%s", b[0] == '/' ? "" : base,
                     b[0] == '/' ? "" : "/", b);
        const char *fname = strrchr(a, '/') ? strrchr(a, '/') + 1 : a;
        size_t stem = nifti_name_stem(fname);
        if (!stem) alice_die("%s:%d: %s is not a .nii or .nii.gz file", list_file, line_no, a);
        char name[DATASET_NAME_LEN];
        if (stem > 5 && !strncmp(fname + stem - 5, "_0000", 5)) stem -= 5;
        case_name(name, fname, stem);
        push(&v, &n, &cap, name, image, label);
    }
    fclose(f);
    if (n == 0) alice_die("--list %s: no 'image [label]' lines found", list_file);
    finish(v, n, list_file);
    *out = v;
    return n;
}
