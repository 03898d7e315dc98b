-- Argo CD health check for finetune.embeddings.io/EmbeddingFinetune (embedding-finetune-operator).
-- Order (docs/architecture.md): generation not yet observed -> Progressing; suspended -> Suspended;
-- Degraded=True or phase Failed -> Degraded; Ready=True -> Healthy; finished without becoming Ready
-- (phase Succeeded or Progressing=False, e.g. not promoted: EvalBelowThreshold) -> Degraded, a final state;
-- anything else -> Progressing.
-- A status of an unexpected shape never raises: it answers Progressing with a message saying so.
local function evaluate(obj)
  local hs = {}
  if type(obj) ~= "table" then
    return { status = "Progressing", message = "Waiting for the resource" }
  end
  local status = obj.status
  if status == nil then
    return { status = "Progressing", message = "Waiting for the operator to report status" }
  end
  if type(status) ~= "table" then
    return { status = "Progressing", message = "Unexpected status (not an object); waiting for the operator" }
  end
  local metadata = obj.metadata
  local spec = obj.spec

  -- 1. The operator has not yet acted on the latest spec.
  local generation = nil
  if type(metadata) == "table" then
    generation = tonumber(metadata.generation)
  end
  local observed = status.observedGeneration
  if observed ~= nil and tonumber(observed) == nil then
    return { status = "Progressing",
             message = "Unexpected status.observedGeneration (" .. type(observed) .. "); waiting for the operator" }
  end
  observed = tonumber(observed)
  if generation ~= nil and (observed == nil or observed ~= generation) then
    hs.status = "Progressing"
    hs.message = "Waiting for the operator to observe generation " .. tostring(generation) ..
      " (observed " .. (observed ~= nil and tostring(observed) or "none") .. ")"
    return hs
  end

  -- Conditions by type; entries of the wrong shape are skipped, a non-list conditions field is reported.
  local conditions = {}
  local badConditions = false
  if status.conditions ~= nil then
    if type(status.conditions) == "table" and (#status.conditions > 0 or next(status.conditions) == nil) then
      for _, c in ipairs(status.conditions) do
        if type(c) == "table" and type(c.type) == "string" then
          conditions[c.type] = c
        end
      end
    else
      badConditions = true
    end
  end
  local function isTrue(name)
    local c = conditions[name]
    return c ~= nil and c.status == "True"
  end
  local function text(v)
    if type(v) == "string" and v ~= "" then return v end
    return nil
  end
  local function conditionMessage(name, fallback)
    local c = conditions[name]
    if c ~= nil then
      local msg = text(c.message)
      local reason = text(c.reason)
      if reason ~= nil and msg ~= nil then return reason .. ": " .. msg end
      if msg ~= nil then return msg end
      if reason ~= nil then return reason end
    end
    return fallback
  end
  local phase = text(status.phase)
  local stage = text(status.currentStage)

  -- 2. Suspended by the user.
  if (type(spec) == "table" and spec.suspend == true) or phase == "Suspended" then
    hs.status = "Suspended"
    hs.message = "Suspended" .. (stage ~= nil and (" before stage " .. stage) or "") ..
      "; set spec.suspend to false to resume"
    return hs
  end

  -- 3. Failed.
  if isTrue("Degraded") or phase == "Failed" then
    local fallback = "Failed"
    if stage ~= nil then
      fallback = "Stage " .. stage .. " failed"
      local stages = status.stages
      if type(stages) == "table" and type(stages[stage]) == "table" and text(stages[stage].message) ~= nil then
        fallback = fallback .. ": " .. stages[stage].message
      end
    end
    hs.status = "Degraded"
    hs.message = conditionMessage("Degraded", fallback)
    return hs
  end

  -- 4. Ready.
  if isTrue("Ready") then
    hs.status = "Healthy"
    local msg = conditionMessage("Ready", "Ready")
    if text(status.endpoint) ~= nil then
      msg = msg .. " (endpoint " .. status.endpoint .. ")"
    end
    hs.message = msg
    return hs
  end

  -- 5. Finished, but not Ready: nothing more happens until the spec changes (e.g. the fine-tuned model was not
  -- promoted). A final state, so `argocd app wait --health` and sync waves stop instead of waiting forever.
  local progressing = conditions["Progressing"]
  if phase == "Succeeded" or (progressing ~= nil and progressing.status == "False") then
    hs.status = "Degraded"
    hs.message = conditionMessage("Ready", "Finished without becoming ready")
    return hs
  end

  -- 6. Anything else: pending or running.
  hs.status = "Progressing"
  if badConditions then
    hs.message = "Unexpected status.conditions (not a list); waiting for the operator"
  elseif status.phase ~= nil and phase == nil then
    hs.message = "Unexpected status.phase (" .. type(status.phase) .. "); waiting for the operator"
  elseif conditions["Progressing"] ~= nil then
    hs.message = conditionMessage("Progressing", "Progressing")
  elseif stage ~= nil then
    hs.message = "Stage " .. stage .. " " .. string.lower(phase or "pending")
  elseif phase ~= nil then
    hs.message = phase
  else
    hs.message = "Waiting for the operator to report progress"
  end
  return hs
end

local ok, result = pcall(evaluate, obj)
if ok and type(result) == "table" then
  return result
end
return { status = "Progressing", message = "Unexpected status shape; health not determined (" .. tostring(result) .. ")" }
