-- Argo CD health of Limen objects (limen.dev: User, Role, TrustedCluster, Resource, Cluster),
-- read from the status the operator writes (kstatus conventions):
--   observedGeneration behind metadata.generation -> Progressing (not looked at yet)
--   Stalled=True                                  -> Degraded (a person must fix the object)
--   Ready=True                                    -> Healthy
--   otherwise (Reconciling=True, no status yet)   -> Progressing
local hs = {status = "Progressing", message = "Waiting for the Limen operator"}
if obj.status == nil or obj.status.conditions == nil then
  return hs
end
local generation = obj.metadata.generation
local observed = obj.status.observedGeneration
if generation ~= nil and (observed == nil or observed < generation) then
  hs.message = "Waiting for the Limen operator to process generation " .. generation
  return hs
end
local found = {}
for _, condition in ipairs(obj.status.conditions) do
  found[condition.type] = condition
end
local function describe(condition)
  if condition.message ~= nil and condition.message ~= "" then
    return condition.reason .. ": " .. condition.message
  end
  return condition.reason
end
if found.Stalled ~= nil and found.Stalled.status == "True" then
  hs.status = "Degraded"
  hs.message = describe(found.Stalled)
elseif found.Ready ~= nil and found.Ready.status == "True" then
  hs.status = "Healthy"
  hs.message = describe(found.Ready)
elseif found.Ready ~= nil then
  hs.message = describe(found.Ready)
end
return hs
