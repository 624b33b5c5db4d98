// Neuron page /m/{model}/n/{neuron_id}: the same panel as on the analysis page, from the server's
// JSON. With ?analysis=<id> it also fetches the neuron's activation on that analysis's prompt.

import { readJSON, showError, api } from "./api.js";
import { renderNeuron } from "./panel.js";

async function main() {
  const neuron = readJSON("neuron-data");
  const model = readJSON("model-data") || "";
  const container = document.getElementById("panel");
  if (!neuron) {
    showError("This page has no neuron data.", { title: "Nothing to show" });
    return;
  }
  renderNeuron(container, { neuron, model, standalone: true });
  const analysisId = new URLSearchParams(window.location.search).get("analysis");
  if (analysisId) {
    try {
      const { data } = await api(`/api/models/${encodeURIComponent(model)}/neurons/${encodeURIComponent(neuron.id)}?analysis=${encodeURIComponent(analysisId)}`);
      renderNeuron(container, { neuron: data.neuron || neuron, activations: data.activations, impacts: data.impacts, model, standalone: true });
    } catch (err) {
      showError(err, { title: "Could not load the activations" });
    }
  }
  document.body.dataset.ready = "1";
}

main().catch((err) => showError(err, { title: "This page failed to start" }));
