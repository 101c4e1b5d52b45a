// Neuron values and slopes, shared by neurons.cu (standalone neurons) and bias.cu (fused with the
// bias). Codes match mochapy.neurons: 0 Identity, 1 ReLU(epsilon), 2 Exponential, 3 Sigmoid,
// 4 Tanh. Comparisons are written so that NaN inputs stay NaN (divergence must stay visible).
#pragma once

#include "common.cuh"

namespace mocha {

enum NeuronCode { kIdentity = 0, kReLU = 1, kExponential = 2, kSigmoid = 3, kTanh = 4 };

// Exponential's parameter is its input cap (mochapy.neurons.Exponential.cap, at most 88: exp
// overflows float32 at inputs >= 88.73) and its offset a shift added to the output (an sd floor,
// Exponential.shift); the other neurons' offset is 0.
template <typename T>
__device__ __forceinline__ T neuron_value(int code, T parameter, T offset, T x) {
    switch (code) {
        case kReLU:
            return x < parameter ? parameter : x;
        case kExponential:
            return exp_(x > parameter ? parameter : x) + offset;
        case kSigmoid:
            // 1 / (1 + exp(-x)) as 0.5 (1 + tanh(x / 2)): never overflows.
            return (T)0.5 * ((T)1 + tanh_((T)0.5 * x));
        case kTanh:
            return tanh_(x);
        default:
            return x;
    }
}

// d neuron / d x, from the input x and the output y = neuron_value(x). Exponential's is exp(x)
// recomputed: y - offset would lose the digits of a small exp(x).
template <typename T>
__device__ __forceinline__ T neuron_slope(int code, T parameter, T x, T y) {
    switch (code) {
        case kReLU:
            return x > parameter ? (T)1 : (T)0;
        case kExponential:
            return x > parameter ? (T)0 : exp_(x);
        case kSigmoid:
            return y * ((T)1 - y);
        case kTanh:
            return (T)1 - y * y;
        default:
            return (T)1;
    }
}

}  // namespace mocha
