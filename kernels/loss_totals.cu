// Running training-loss totals kept on the device, so a training step never waits for the host:
// totals[0] += sum of the loss layers' values (read through a table of pointers), totals[1] += 1.
// The host reads and clears them every few iterations. One thread: there are only a few losses.
template <typename T>
__global__ void accumulate_losses(const unsigned long long* loss_pointers, int count,
                                  double* totals) {
    double sum = 0.0;
    for (int k = 0; k < count; ++k) {
        sum += (double)*reinterpret_cast<const T*>(loss_pointers[k]);
    }
    totals[0] += sum;
    totals[1] += 1.0;
}
