// CUDA's execution model on the CPU, for compiling kernels/*.cu as C++ (g++) in the test suite.
//
// Each block's threads are cooperative fibers that run until they reach __syncthreads, a warp
// shuffle or their end; each warp runs ahead as far as it can before the next, and blocks run one
// after another, in natural, reversed or shuffled order.
// __shared__ variables (block-scope declarations, registered by a statement build.py adds after
// each) are filled with NaN bytes (0xFF) when first reached and at every block start, so a read
// before the barrier that should have ordered it shows up as NaN. A barrier that
// some threads reach at another line, or never reach because they exited, and a shuffle naming a
// lane that exited or is elsewhere, end the launch with an error instead of undefined behaviour.
// One launch runs at a time (one OS thread); atomics are therefore plain read-modify-writes.
#pragma once

#include <ucontext.h>

#include <cmath>
#include <cstdarg>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <type_traits>
#include <utility>
#include <vector>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __noinline__ __attribute__((noinline))
#define __launch_bounds__(...)
#define __restrict__ __restrict
#define __shared__ static
#define __syncthreads() cuda_emu::sync_threads(__COUNTER__, __LINE__)
#define __syncwarp(...) ((void)0)

namespace cuda_emu {

struct Index {
    unsigned int x, y, z;
};

enum class State { kReady, kBarrier, kShuffle, kExited };

// Switching fibers: a few instructions on x86-64 (callee-saved registers and the stack pointer),
// ucontext elsewhere (which also saves the signal mask, a system call per switch).
#if defined(__x86_64__)
struct Context {
    void* sp;
};
extern "C" void cuda_emu_switch(void** save_sp, void* load_sp);
asm(R"(
    .text
    .globl cuda_emu_switch
    .hidden cuda_emu_switch
    .type cuda_emu_switch, @function
cuda_emu_switch:
    pushq %rbp
    pushq %rbx
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    movq %rsp, (%rdi)
    movq %rsi, %rsp
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %rbx
    popq %rbp
    ret
    .size cuda_emu_switch, .-cuda_emu_switch
)");
inline void switch_context(Context* from, Context* to) { cuda_emu_switch(&from->sp, to->sp); }
inline void make_context(Context* context, char* stack, size_t bytes, void (*entry)()) {
    uintptr_t top = ((uintptr_t)(stack + bytes)) & ~(uintptr_t)15;
    void** slot = (void**)(top - 16);  // entry's "return address": rsp % 16 == 8 after ret
    *slot = (void*)entry;
    void** sp = slot - 6;  // the six callee-saved registers, popped as zeros
    for (int i = 0; i < 6; ++i) {
        sp[i] = nullptr;
    }
    context->sp = sp;
}
#else
struct Context {
    ucontext_t context;
};
inline void switch_context(Context* from, Context* to) {
    swapcontext(&from->context, &to->context);
}
inline void make_context(Context* context, char* stack, size_t bytes, void (*entry)()) {
    getcontext(&context->context);
    context->context.uc_stack.ss_sp = stack;
    context->context.uc_stack.ss_size = bytes;
    context->context.uc_link = nullptr;
    makecontext(&context->context, entry, 0);
}
#endif

struct Fiber {
    Context context;
    Index index;
    State state;
    int site;  // which barrier or shuffle it waits at (one per place in the source)
    int line;
    unsigned int mask;
    int source_lane;
    unsigned long long value;  // a shuffle's operand, then its result (raw bytes)
    char* stack;
    bool started;
};

constexpr size_t kStackBytes = 256 * 1024;
constexpr int kWarp = 32;

static Index g_block_index, g_block_dim, g_grid_dim;
static Fiber* g_current = nullptr;
static Context g_scheduler;
static std::vector<Fiber> g_fibers;
static std::vector<char*> g_free_stacks;
static char g_error[1024];
static bool g_failed = false;
static void (*g_thunk)(void*) = nullptr;

struct SharedVariable {
    void* address;
    size_t bytes;
};
static std::vector<SharedVariable> g_shared;

// Called where a __shared__ variable is declared: registers it, poisoned, the first time.
inline void shared(void* address, size_t bytes) {
    for (const SharedVariable& variable : g_shared) {
        if (variable.address == address) {
            return;
        }
    }
    g_shared.push_back(SharedVariable{address, bytes});
    std::memset(address, 0xFF, bytes);
}
static void* g_closure = nullptr;

}  // namespace cuda_emu

#define threadIdx (cuda_emu::g_current->index)
#define blockIdx (cuda_emu::g_block_index)
#define blockDim (cuda_emu::g_block_dim)
#define gridDim (cuda_emu::g_grid_dim)

namespace cuda_emu {

__attribute__((format(printf, 1, 2))) static void fail(const char* format, ...) {
    if (g_failed) {
        return;
    }
    g_failed = true;
    va_list args;
    va_start(args, format);
    vsnprintf(g_error, sizeof g_error, format, args);
    va_end(args);
}

static int linear(const Index& t) {
    return (int)(t.x + g_block_dim.x * (t.y + g_block_dim.y * t.z));
}

// The running fiber gives control back to the block scheduler.
static void yield() { switch_context(&g_current->context, &g_scheduler); }

static void fiber_entry() {
    g_thunk(g_closure);
    g_current->state = State::kExited;
    yield();  // never resumed
}

inline void sync_threads(int site, int line) {
    g_current->state = State::kBarrier;
    g_current->site = site;
    g_current->line = line;
    yield();
}

template <typename T>
inline T shuffle(unsigned int mask, T value, int source_lane, int site, int line) {
    static_assert(sizeof(T) <= sizeof(unsigned long long), "shuffle of a value over 8 bytes");
    Fiber* self = g_current;
    self->state = State::kShuffle;
    self->site = site;
    self->line = line;
    self->mask = mask;
    self->source_lane = source_lane;
    self->value = 0;
    std::memcpy(&self->value, &value, sizeof(T));
    yield();
    T result;
    std::memcpy(&result, &self->value, sizeof(T));
    return result;
}

// Runs every ready fiber of the block until it waits or exits. False when the launch failed.
static bool run_ready(const std::vector<int>& order) {
    for (int t : order) {
        Fiber& fiber = g_fibers[t];
        if (fiber.state != State::kReady) {
            continue;
        }
        if (!fiber.started) {
            if (g_free_stacks.empty()) {
                g_free_stacks.push_back(static_cast<char*>(std::malloc(kStackBytes)));
            }
            fiber.stack = g_free_stacks.back();
            g_free_stacks.pop_back();
            make_context(&fiber.context, fiber.stack, kStackBytes, fiber_entry);
            fiber.started = true;
        }
        g_current = &fiber;
        switch_context(&g_scheduler, &fiber.context);
        g_current = nullptr;
        if (fiber.state == State::kExited && fiber.stack != nullptr) {
            g_free_stacks.push_back(fiber.stack);
            fiber.stack = nullptr;
        }
        if (g_failed) {
            return false;
        }
    }
    return true;
}

// Completes the shuffle of the warp starting at thread `warp_start` if all its named lanes wait at
// it: 1 if it did, 0 if some lane is not there yet, -1 (launch failed) if it can never complete.
static int release_shuffle(int warp_start, int threads) {
    int waiting = -1;
    for (int lane = 0; lane < kWarp && warp_start + lane < threads; ++lane) {
        if (g_fibers[warp_start + lane].state == State::kShuffle) {
            waiting = warp_start + lane;
            break;
        }
    }
    if (waiting < 0) {
        return 0;
    }
    const Fiber& first = g_fibers[waiting];
    bool complete = true;
    for (int lane = 0; lane < kWarp; ++lane) {
        if (!(first.mask >> lane & 1u)) {
            continue;
        }
        const int t = warp_start + lane;
        if (t >= threads) {
            fail("warp shuffle at line %d names lane %d, which does not exist (block of %d "
                 "threads)", first.line, lane, threads);
            return -1;
        }
        const Fiber& other = g_fibers[t];
        if (other.state == State::kExited) {
            fail("warp shuffle at line %d names lane %d of warp %d, which has exited",
                 first.line, lane, warp_start / kWarp);
            return -1;
        }
        if (other.state == State::kShuffle &&
            (other.site != first.site || other.mask != first.mask)) {
            fail("divergent warp shuffles in warp %d: lines %d and %d", warp_start / kWarp,
                 first.line, other.line);
            return -1;
        }
        if (other.state != State::kShuffle) {
            complete = false;
        }
    }
    if (!complete) {
        return 0;
    }
    unsigned long long values[kWarp];
    for (int lane = 0; lane < kWarp && warp_start + lane < threads; ++lane) {
        values[lane] = g_fibers[warp_start + lane].value;
    }
    for (int lane = 0; lane < kWarp; ++lane) {
        if (!(first.mask >> lane & 1u)) {
            continue;
        }
        Fiber& fiber = g_fibers[warp_start + lane];
        const int source = fiber.source_lane;
        if (source >= 0 && source < kWarp && (first.mask >> source & 1u)) {
            fiber.value = values[source];
        }
        fiber.state = State::kReady;
    }
    return 1;
}

// Releases a barrier every live thread waits at; fails on a divergent or deadlocked block.
static bool release_barrier(int threads) {
    int site = -1, line = -1, exited = -1, waiting = -1;
    for (int t = 0; t < threads; ++t) {
        const Fiber& fiber = g_fibers[t];
        if (fiber.state == State::kExited) {
            exited = exited < 0 ? t : exited;
        } else if (fiber.state == State::kBarrier) {
            if (site >= 0 && fiber.site != site) {
                fail("divergent __syncthreads: threads %d and %d wait at lines %d and %d", waiting,
                     t, line, fiber.line);
                return false;
            }
            site = fiber.site;
            line = fiber.line;
            waiting = t;
        } else {
            fail("deadlock: thread %d waits at a warp shuffle (line %d) that cannot complete "
                 "while others wait at __syncthreads", t, fiber.line);
            return false;
        }
    }
    if (waiting >= 0 && exited >= 0) {
        fail("divergent __syncthreads: thread %d exited while thread %d waits at line %d",
             exited, waiting, line);
        return false;
    }
    for (int t = 0; t < threads; ++t) {
        if (g_fibers[t].state == State::kBarrier) {
            g_fibers[t].state = State::kReady;
        }
    }
    return true;
}

// Runs each warp ahead as far as it can (its shuffles completing as soon as its lanes arrive), warp
// after warp, so one warp can race past the others' reads up to the next barrier. False when the
// launch failed.
static bool run_warps(const std::vector<std::vector<int>>& warps, int threads) {
    for (const std::vector<int>& lanes : warps) {
        for (;;) {
            if (!run_ready(lanes)) {
                return false;
            }
            const int released = release_shuffle(lanes[0] / kWarp * kWarp, threads);
            if (released < 0) {
                return false;
            }
            if (released == 0) {
                break;
            }
        }
    }
    return true;
}

// The threads grouped by warp: warps in the order of their first thread in `thread_order`, each
// warp's threads in that order too.
static std::vector<std::vector<int>> warps_in_order(const std::vector<int>& thread_order) {
    const int count = ((int)thread_order.size() + kWarp - 1) / kWarp;
    std::vector<std::vector<int>> by_warp(count);
    std::vector<int> first_seen;
    for (int t : thread_order) {
        if (by_warp[t / kWarp].empty()) {
            first_seen.push_back(t / kWarp);
        }
        by_warp[t / kWarp].push_back(t);
    }
    std::vector<std::vector<int>> warps;
    for (int warp : first_seen) {
        warps.push_back(by_warp[warp]);
    }
    return warps;
}

static void run_block(const std::vector<std::vector<int>>& warps, int threads) {
    for (const SharedVariable& variable : g_shared) {
        std::memset(variable.address, 0xFF, variable.bytes);
    }
    g_fibers.assign(threads, Fiber{});
    for (int t = 0; t < threads; ++t) {
        Fiber& fiber = g_fibers[t];
        fiber.index = Index{t % g_block_dim.x, (t / g_block_dim.x) % g_block_dim.y,
                            t / (g_block_dim.x * g_block_dim.y)};
        fiber.state = State::kReady;
    }
    while (run_warps(warps, threads)) {
        bool all_exited = true;
        for (const Fiber& fiber : g_fibers) {
            all_exited = all_exited && fiber.state == State::kExited;
        }
        if (all_exited || !release_barrier(threads)) {
            break;
        }
    }
    for (Fiber& fiber : g_fibers) {  // abandoned after a failure: keep their stacks for reuse
        if (fiber.stack != nullptr) {
            g_free_stacks.push_back(fiber.stack);
            fiber.stack = nullptr;
        }
    }
}

// Order 0 natural, 1 reversed, 2 shuffled (seeded).
static std::vector<int> ordering(int count, int order, unsigned long long* seed) {
    std::vector<int> items(count);
    for (int i = 0; i < count; ++i) {
        items[i] = order == 1 ? count - 1 - i : i;
    }
    if (order == 2) {
        for (int i = count - 1; i > 0; --i) {
            *seed = *seed * 6364136223846793005ull + 1442695040888963407ull;
            const int j = (int)((*seed >> 33) % (unsigned long long)(i + 1));
            std::swap(items[i], items[j]);
        }
    }
    return items;
}

template <typename... P, size_t... I>
void invoke(void (*kernel)(P...), void** args, std::index_sequence<I...>) {
    kernel(*static_cast<std::remove_cv_t<P>*>(args[I])...);
}

template <typename... P>
struct Launch {
    void (*kernel)(P...);
    void** args;
    static void run(void* self) {
        Launch* launch = static_cast<Launch*>(self);
        invoke(launch->kernel, launch->args, std::index_sequence_for<P...>{});
    }
};

// Runs the whole grid; returns 0, or 1 with the message in `error`.
template <typename... P>
int launch(void (*kernel)(P...), const unsigned int* grid, const unsigned int* block,
           void** args, int order, unsigned long long seed, char* error, size_t error_size) {
    Launch<P...> closure{kernel, args};
    g_thunk = &Launch<P...>::run;
    g_closure = &closure;
    g_failed = false;
    g_grid_dim = Index{grid[0], grid[1], grid[2]};
    g_block_dim = Index{block[0], block[1], block[2]};
    const int threads = (int)(block[0] * block[1] * block[2]);
    const std::vector<std::vector<int>> warps = warps_in_order(ordering(threads, order, &seed));
    const long long blocks = (long long)grid[0] * grid[1] * grid[2];
    const std::vector<int> block_order = ordering((int)blocks, order, &seed);
    for (int b : block_order) {
        g_block_index = Index{b % grid[0], (b / grid[0]) % grid[1], b / (grid[0] * grid[1])};
        run_block(warps, threads);
        if (g_failed) {
            std::snprintf(error, error_size, "block (%u, %u, %u): %s", g_block_index.x,
                          g_block_index.y, g_block_index.z, g_error);
            return 1;
        }
    }
    return 0;
}

// Parameter kinds for the host's argument checks: 1 signed integer, 2 unsigned integer,
// 3 floating point, 4 pointer, 0 anything else.
template <typename T>
constexpr long long kind_of() {
    return std::is_pointer_v<T>          ? 4
           : std::is_floating_point_v<T> ? 3
           : std::is_same_v<T, bool>     ? 0
           : std::is_unsigned_v<T>       ? 2
           : std::is_integral_v<T>       ? 1
                                         : 0;
}

template <typename T>
void describe_one(long long* out) {
    using Pointee = std::remove_cv_t<std::remove_pointer_t<T>>;
    out[0] = kind_of<T>();
    out[1] = (long long)sizeof(T);
    out[2] = std::is_pointer_v<T> ? kind_of<Pointee>() : 0;
    out[3] = std::is_pointer_v<T> ? (long long)sizeof(Pointee) : 0;
}

// Writes 4 numbers per parameter (kind, size, pointee kind, pointee size); returns the count.
template <typename... P>
int describe(void (*)(P...), long long* out) {
    int i = 0;
    ((describe_one<P>(out + 4 * i++)), ...);
    return (int)sizeof...(P);
}

}  // namespace cuda_emu

// -- device functions the kernels call -------------------------------------------------------------
// Shuffles are macros so that the scheduler knows each call site (divergent shuffles are errors).
#define __shfl_down_sync(mask, value, ...) cuda_emu::shfl_down(__COUNTER__, __LINE__, mask, value, __VA_ARGS__)
#define __shfl_up_sync(mask, value, ...) cuda_emu::shfl_up(__COUNTER__, __LINE__, mask, value, __VA_ARGS__)
#define __shfl_xor_sync(mask, value, ...) cuda_emu::shfl_xor(__COUNTER__, __LINE__, mask, value, __VA_ARGS__)
#define __shfl_sync(mask, value, ...) cuda_emu::shfl(__COUNTER__, __LINE__, mask, value, __VA_ARGS__)

namespace cuda_emu {

inline int lane_id() { return linear(g_current->index) % kWarp; }

template <typename T>
inline T shfl_down(int site, int line, unsigned int mask, T value, unsigned int delta, int width = kWarp) {
    const int lane = lane_id();
    const int end = lane / width * width + width;
    return shuffle(mask, value, lane + (int)delta < end ? lane + (int)delta : lane, site, line);
}
template <typename T>
inline T shfl_up(int site, int line, unsigned int mask, T value, unsigned int delta, int width = kWarp) {
    const int lane = lane_id();
    const int begin = lane / width * width;
    return shuffle(mask, value, lane - (int)delta >= begin ? lane - (int)delta : lane, site, line);
}
template <typename T>
inline T shfl_xor(int site, int line, unsigned int mask, T value, int lane_mask, int width = kWarp) {
    const int lane = lane_id();
    const int source = lane ^ lane_mask;
    return shuffle(mask, value, source < (lane / width + 1) * width ? source : lane, site, line);
}
template <typename T>
inline T shfl(int site, int line, unsigned int mask, T value, int source_lane, int width = kWarp) {
    const int lane = lane_id();
    return shuffle(mask, value, lane / width * width + source_lane % width, site, line);
}

}  // namespace cuda_emu

inline void __threadfence() {}
inline void __threadfence_block() {}

template <typename T>
inline T atomicAdd(T* address, T value) {
    const T old = *address;
    *address = old + value;
    return old;
}
template <typename T>
inline T atomicSub(T* address, T value) {
    const T old = *address;
    *address = old - value;
    return old;
}
template <typename T>
inline T atomicExch(T* address, T value) {
    const T old = *address;
    *address = value;
    return old;
}
template <typename T>
inline T atomicCAS(T* address, T compare, T value) {
    const T old = *address;
    if (old == compare) {
        *address = value;
    }
    return old;
}
template <typename T>
inline T atomicMax(T* address, T value) {
    const T old = *address;
    *address = old < value ? value : old;
    return old;
}
template <typename T>
inline T atomicMin(T* address, T value) {
    const T old = *address;
    *address = value < old ? value : old;
    return old;
}

inline unsigned int __umulhi(unsigned int a, unsigned int b) {
    return (unsigned int)(((unsigned long long)a * b) >> 32);
}
inline void sincospif(float x, float* s, float* c) {
    *s = (float)std::sin(M_PI * (double)x);
    *c = (float)std::cos(M_PI * (double)x);
}
inline void sincospi(double x, double* s, double* c) {
    *s = std::sin(M_PI * x);
    *c = std::cos(M_PI * x);
}
inline void sincosf(float x, float* s, float* c) {
    *s = std::sin(x);
    *c = std::cos(x);
}
inline void sincos(double x, double* s, double* c) {
    *s = std::sin(x);
    *c = std::cos(x);
}
inline float rsqrtf(float x) { return 1.0f / std::sqrt(x); }
inline double rsqrt(double x) { return 1.0 / std::sqrt(x); }
inline float __expf(float x) { return std::exp(x); }
inline float __logf(float x) { return std::log(x); }
inline float __fdividef(float a, float b) { return a / b; }

inline int min(int a, int b) { return a < b ? a : b; }
inline int max(int a, int b) { return a > b ? a : b; }
inline unsigned int min(unsigned int a, unsigned int b) { return a < b ? a : b; }
inline unsigned int max(unsigned int a, unsigned int b) { return a > b ? a : b; }
inline long long min(long long a, long long b) { return a < b ? a : b; }
inline long long max(long long a, long long b) { return a > b ? a : b; }
inline unsigned long long min(unsigned long long a, unsigned long long b) { return a < b ? a : b; }
inline unsigned long long max(unsigned long long a, unsigned long long b) { return a > b ? a : b; }
inline float min(float a, float b) { return std::fmin(a, b); }
inline float max(float a, float b) { return std::fmax(a, b); }
inline double min(double a, double b) { return std::fmin(a, b); }
inline double max(double a, double b) { return std::fmax(a, b); }

using std::exp;
using std::log;
using std::pow;
using std::sqrt;
using std::tanh;
