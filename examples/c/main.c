/* Runs a model compiled by `bnnc build MODEL --target x86_64 --name NAME` on one sample.
 *
 *   cc -DMODEL_HEADER='"NAME.h"' -DMODEL=NAME main.c -L. -lNAME -Wl,-rpath,'$ORIGIN'
 *   ./main [input.f32]
 *
 * input.f32 holds exactly one sample: NAME_input_len() raw little-endian float32 values (a
 * numpy array saved with `arr.astype('<f4').tofile('input.f32')`). Without it the sample is
 * all zeros. Prints the outputs and their argmax, then checks that the library rejects a bad
 * call (input_len 0) with a non-zero code and writes nothing.
 *
 * The program is generic over the model's name: MODEL is pasted in front of each function of
 * the ABI, so the same file works with any model a header declares. */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#if !defined(MODEL_HEADER) || !defined(MODEL)
#error "compile with -DMODEL_HEADER='\"NAME.h\"' -DMODEL=NAME, NAME as given to bnnc build --name"
#endif

#include MODEL_HEADER

/* Two levels, so that MODEL is expanded to the model's name before it is pasted. */
#define PASTE_(a, b) a##b
#define PASTE(a, b) PASTE_(a, b)
#define MODEL_FN(suffix) PASTE(MODEL, suffix)
#define STRING_(x) #x
#define STRING(x) STRING_(x)
#define MODEL_NAME STRING(MODEL)

/* Reads exactly `len` little-endian float32 values from `path`. Assembles each value from its
 * bytes rather than reading floats directly, so that the file means the same on any host. */
static int read_sample(const char *path, float *sample, size_t len) {
    FILE *file = fopen(path, "rb");
    if (!file) {
        perror(path);
        return -1;
    }
    int status = 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char bytes[4];
        if (fread(bytes, 1, 4, file) != 4) {
            fprintf(stderr, "%s: holds %zu float32 values, but one sample of %s is %zu\n",
                    path, i, MODEL_NAME, len);
            status = -1;
            break;
        }
        uint32_t bits = (uint32_t)bytes[0] | (uint32_t)bytes[1] << 8 |
                        (uint32_t)bytes[2] << 16 | (uint32_t)bytes[3] << 24;
        memcpy(&sample[i], &bits, sizeof bits);
    }
    if (status == 0 && fgetc(file) != EOF) {
        fprintf(stderr, "%s: longer than one sample of %s (%zu float32 values, %zu bytes)\n",
                path, MODEL_NAME, len, len * 4);
        status = -1;
    }
    fclose(file);
    return status;
}

int main(int argc, char **argv) {
    if (argc > 2) {
        fprintf(stderr, "usage: %s [input.f32]\n", argv[0]);
        return 2;
    }
    size_t input_len = MODEL_FN(_input_len)();
    size_t output_len = MODEL_FN(_output_len)();
    printf("model %s: input_len %zu, output_len %zu\n", MODEL_NAME, input_len, output_len);

    /* calloc: zeros are the sample when no file is given. */
    float *input = calloc(input_len, sizeof *input);
    float *output = calloc(output_len, sizeof *output);
    if (!input || !output) {
        fprintf(stderr, "out of memory\n");
        return 1;
    }
    if (argc == 2 && read_sample(argv[1], input, input_len) != 0)
        return 1;

    int32_t code = MODEL_FN(_run)(input, input_len, output, output_len);
    if (code != 0) {
        fprintf(stderr, "%s_run failed with code %d\n", MODEL_NAME, (int)code);
        return 1;
    }
    size_t argmax = 0;
    for (size_t i = 0; i < output_len; i++) {
        printf("output[%zu] = %g\n", i, output[i]);
        if (output[i] > output[argmax])
            argmax = i;
    }
    printf("argmax: %zu\n", argmax);

    /* The error path: no samples is not a batch. The library must say so and leave the output
     * as it was, which a sentinel shows. */
    for (size_t i = 0; i < output_len; i++)
        output[i] = -12345.0f;
    code = MODEL_FN(_run)(input, 0, output, output_len);
    int untouched = 1;
    for (size_t i = 0; i < output_len; i++)
        untouched &= output[i] == -12345.0f;
    if (code == 0 || !untouched) {
        fprintf(stderr, "%s_run accepted input_len 0 (code %d, output %s)\n", MODEL_NAME,
                (int)code, untouched ? "untouched" : "written");
        return 1;
    }
    printf("input_len 0: rejected with code %d\n", (int)code);

    free(input);
    free(output);
    return 0;
}
